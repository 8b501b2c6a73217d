package kubeproxy

import (
	"github.com/node-doctor/node-doctor/pkg/dataplane"

	"context"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"syscall"
	"testing"

	"github.com/moby/ipvs"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// fakeIPVSNode is an IPVS lister that also lists kube-ipvs0 and ipsets.
type fakeIPVSNode struct {
	vs     []dataplane.IPVSVirtual
	dummy  []string
	noLink bool
	sets   map[string]dataplane.IPSet
}

func (f *fakeIPVSNode) Services(context.Context) ([]dataplane.IPVSVirtual, error) { return f.vs, nil }

func (f *fakeIPVSNode) DummyAddrs(context.Context) ([]string, bool, error) {
	return f.dummy, !f.noLink, nil
}

func (f *fakeIPVSNode) IPSets(context.Context) (map[string]dataplane.IPSet, error) {
	return f.sets, nil
}

func ipvsVS(ip string, proto uint16, port uint16, dests ...string) dataplane.IPVSVirtual {
	// As kube-proxy's proxier sets them: round robin, a host netmask,
	// weight 1 for serving endpoints (0 for terminating ones).
	v := dataplane.IPVSVirtual{Service: ipvs.Service{AddressFamily: syscall.AF_INET, Address: netip.MustParseAddr(ip).AsSlice(), Protocol: proto, Port: port,
		SchedName: "rr", Netmask: 0xffffffff}}
	for _, d := range dests {
		ap := netip.MustParseAddrPort(d)
		v.Destinations = append(v.Destinations, ipvs.Destination{AddressFamily: syscall.AF_INET, Address: ap.Addr().AsSlice(), Port: ap.Port(), Weight: 1})
	}
	return v
}

func harnessNode() *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-doctor-e2e"},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.0.2.10"}, {Type: corev1.NodeHostName, Address: "node-doctor-e2e"}}}}
}

func TestNodePortAddressAllowed(t *testing.T) {
	v4, v6 := net.ParseIP("192.0.2.10"), net.ParseIP("fd00::10")
	for _, c := range []struct {
		addrs  []string
		ip     net.IP
		expect bool
	}{
		{nil, v4, true},
		{[]string{"primary"}, v4, true},
		{[]string{"192.0.2.0/24"}, v4, true},
		{[]string{"198.51.100.0/24"}, v4, false},
		{[]string{"198.51.100.0/24", "192.0.2.0/28"}, v4, true},
		{[]string{"fd00::/64"}, v4, true}, // no CIDR of this family: its default
		{[]string{"fd00::/64"}, v6, true},
		{[]string{"fd01::/64"}, v6, false},
		{[]string{"localhost"}, v4, false},
		{[]string{"localhost", "192.0.2.0/24"}, v4, true},
		{[]string{"not-a-cidr"}, v4, true},
	} {
		if got := nodePortAddressAllowed(c.ip, c.addrs); got != c.expect {
			t.Errorf("%v on %s: got %v", c.addrs, c.ip, got)
		}
	}
}

// BenchmarkVerifyIPVS10k: compare (no kernel read) of 10,000 Services x 5
// endpoints against the IPVS state kube-proxy would program for them:
// virtual servers, kube-ipvs0 addresses, KUBE-CLUSTER-IP.
func BenchmarkVerifyIPVS10k(b *testing.B) {
	svcs, eps := genKubeProxy(io.Discard, 10000, 5)
	st := &fakeIPVSNode{sets: map[string]dataplane.IPSet{"KUBE-CLUSTER-IP": {Type: "hash:ip,port"}}}
	cip := st.sets["KUBE-CLUSTER-IP"]
	for i, s := range svcs {
		var dests []string
		for _, e := range eps[i].Endpoints {
			dests = append(dests, e.Addresses[0]+":8080")
		}
		st.vs = append(st.vs, ipvsVS(s.Spec.ClusterIP, 6, 80, dests...))
		st.dummy = append(st.dummy, s.Spec.ClusterIP)
		cip.Entries = append(cip.Entries, s.Spec.ClusterIP+",tcp:80")
	}
	st.sets["KUBE-CLUSTER-IP"] = cip
	b.ReportAllocs()
	for b.Loop() {
		p, n, err := readIPVS(context.Background(), st)
		if err != nil {
			b.Fatal(err)
		}
		desired := DesiredServicePorts(svcs, eps, "n")
		disc, verified, _ := Compare(desired, p[false])
		disc, verified = CompareIPVSNode(desired, false, n, harnessNode(), disc, verified)
		if len(disc) != 0 || verified != 10000 {
			b.Fatalf("verified %d, %d discrepancies, first %+v", verified, len(disc), disc[0])
		}
	}
}

// /configz as real kube-proxy (v1.37, the harness's --nodeport-addresses)
// serves it on its metrics address.
func TestParseKubeProxyConfigz(t *testing.T) {
	b, err := os.ReadFile("testdata/kubeproxy/configz-iptables.json")
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseKubeProxyConfigz(b)
	if err != nil || !slices.Equal(got, []string{"198.51.100.10/32"}) {
		t.Fatalf("got %v, %v", got, err)
	}
	if got, err := ParseKubeProxyConfigz([]byte(`{"kubeproxy.config.k8s.io":{"mode":"ipvs"}}`)); err != nil || got != nil {
		t.Fatalf("default: got %v, %v", got, err)
	}
	for _, bad := range []string{`{}`, `not json`, `{"kubeproxy.config.k8s.io":{"nodePortAddresses":"x"}}`} {
		if _, err := ParseKubeProxyConfigz([]byte(bad)); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}
