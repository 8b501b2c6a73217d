package netcheck

import (
	"github.com/node-doctor/node-doctor/pkg/kubeproxy"

	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/node-doctor/node-doctor/pkg/check"
)

func readDNS(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata/dns", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseProcNetSockets(t *testing.T) {
	for _, tc := range []struct {
		file string
		udp  bool
		want string
	}{
		{"udp", true, "127.0.0.1:15353"},
		{"udp6", true, "[::1]:15353"},
		{"tcp", false, "127.0.0.1:15353,0.0.0.0:2024"},
		// the third socket is connected (state 01), not listening
		{"udp-nodelocaldns", true, "169.254.20.10:53,10.96.0.10:53"},
		{"udp-nodelocaldns", false, ""},
	} {
		aps, err := ParseProcNetSockets(readDNS(t, tc.file), tc.udp)
		if err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		var got []string
		for _, ap := range aps {
			got = append(got, ap.String())
		}
		if strings.Join(got, ",") != tc.want {
			t.Errorf("%s udp=%v: %v, want %s", tc.file, tc.udp, got, tc.want)
		}
	}
	if _, err := ParseProcNetSockets([]byte("0: 0100007G:0035 00000000:0000 07\n"), true); err == nil {
		t.Error("bad hex address: no error")
	}
}

func FuzzParseProcNetSockets(f *testing.F) {
	for _, n := range []string{"udp", "udp6", "tcp", "udp-nodelocaldns"} {
		f.Add(readDNS(f, n), true)
	}
	f.Fuzz(func(t *testing.T, b []byte, udp bool) {
		aps, _ := ParseProcNetSockets(b, udp)
		for _, ap := range aps {
			if !ap.IsValid() || ap.Addr().Is4In6() {
				t.Fatalf("address %v not valid and unmapped", ap)
			}
		}
	})
}

func TestParseResolvConf(t *testing.T) {
	for file, want := range map[string]string{
		"resolv-systemd-stub.conf": "127.0.0.53",
		"resolv-uplink.conf":       "192.0.2.53,2001:db8::53", // the zone is dropped
	} {
		var got []string
		for _, a := range ParseResolvConf(readDNS(t, file)) {
			got = append(got, a.String())
		}
		if strings.Join(got, ",") != want {
			t.Errorf("%s: %v, want %s", file, got, want)
		}
	}
	if got := ParseResolvConf([]byte("nameserver\nnameserver not-an-ip\n# nameserver 10.0.0.1\n")); got != nil {
		t.Errorf("no valid nameserver: %v", got)
	}
}

func FuzzParseResolvConf(f *testing.F) {
	for _, n := range []string{"resolv-systemd-stub.conf", "resolv-uplink.conf"} {
		f.Add(readDNS(f, n))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, a := range ParseResolvConf(b) {
			if !a.IsValid() || a.Zone() != "" {
				t.Fatalf("nameserver %v not valid or has a zone", a)
			}
		}
	})
}

type fakeKubeletDNS struct {
	c     KubeletDNSConfig
	found bool
	err   error
}

func (f fakeKubeletDNS) KubeletDNS(context.Context) (KubeletDNSConfig, bool, error) {
	return f.c, f.found, f.err
}

type fakeAddrs []string

func (f fakeAddrs) LocalAddrs(context.Context) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, a := range f {
		out = append(out, netip.MustParseAddr(a))
	}
	return out, nil
}

func TestClusterDNS(t *testing.T) {
	ready, notReady := true, false
	svc := func(name, ip string) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: name, UID: types.UID("uid-" + name)},
			Spec: corev1.ServiceSpec{ClusterIP: ip, ClusterIPs: []string{ip}}}
	}
	slice := func(svc string, r *bool) *discoveryv1.EndpointSlice {
		return &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: svc + "-abc", Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
			Endpoints:  []discoveryv1.Endpoint{{Addresses: []string{"10.244.0.5"}, Conditions: discoveryv1.EndpointConditions{Ready: r}}},
		}
	}
	api := fakeLister{
		svcs: []*corev1.Service{svc("kube-dns", "10.96.0.10"), svc("broken-dns", "10.96.0.11")},
		eps:  []*discoveryv1.EndpointSlice{slice("kube-dns", &ready), slice("broken-dns", &notReady)},
	}
	const file = "clusterDNS in /var/lib/kubelet/config.yaml"
	kl := func(dns ...string) fakeKubeletDNS {
		return fakeKubeletDNS{found: true, c: KubeletDNSConfig{ClusterDNS: dns, ClusterDNSFrom: file, ClusterDomain: "cluster.local",
			ResolvConf: "/etc/resolv.conf", ResolvConfFrom: "the kubelet default"}}
	}
	withResolv := func(k fakeKubeletDNS, path string) fakeKubeletDNS {
		k.c.ResolvConf, k.c.ResolvConfFrom = path, "resolvConf in /var/lib/kubelet/config.yaml"
		return k
	}
	root := func(udp string) fstest.MapFS {
		return fstest.MapFS{
			"proc/net/udp":                    {Data: readDNS(t, udp)},
			"proc/net/tcp":                    {Data: readDNS(t, "tcp")},
			"etc/resolv.conf":                 {Data: readDNS(t, "resolv-uplink.conf")},
			"run/systemd/resolve/stub-resolv": {Data: readDNS(t, "resolv-systemd-stub.conf")},
		}
	}
	local := fakeAddrs{"192.0.2.10", "169.254.20.10"}
	for _, tc := range []struct {
		name    string
		kubelet fakeKubeletDNS
		api     kubeproxy.ServiceLister
		udp     string
		reasons []string // nil: not applicable
		msg     string   // in the first finding's message
		object  string   // the first finding's object, when not the node
	}{
		{"ClusterIP with a ready endpoint", kl("10.96.0.10"), api, "udp", []string{"ClusterDNSServed"}, "10.96.0.10 (Service kube-system/kube-dns, 1 ready endpoints)", ""},
		{"Service without a ready endpoint", kl("10.96.0.11"), api, "udp", []string{"ClusterDNSNoEndpoints"}, "Service kube-system/broken-dns, which has no ready endpoint", "Service kube-system/broken-dns"},
		{"an IP no Service has", kl("10.96.0.99"), api, "udp", []string{"ClusterDNSNoService"}, "clusterDNS address 10.96.0.99 (" + file + "): no Service has that ClusterIP", ""},
		{"one good, one wrong", kl("10.96.0.10", "10.96.0.99"), api, "udp", []string{"ClusterDNSNoService"}, "10.96.0.99", ""},
		{"node-local cache listening", kl("169.254.20.10"), api, "udp-nodelocaldns", []string{"ClusterDNSServed"}, "169.254.20.10 (a DNS cache listening on this node)", ""},
		{"node-local cache not listening", kl("169.254.20.10"), api, "udp", []string{"ClusterDNSNotListening"}, "169.254.20.10 (" + file + ") is on this node but nothing listens on port 53", ""},
		{"node-local cache listening, no API", kl("169.254.20.10"), fakeLister{err: errors.New("down")}, "udp-nodelocaldns", []string{"ClusterDNSServed"}, "a DNS cache listening on this node", ""},
		{"node-local cache not listening, no API", kl("169.254.20.10"), fakeLister{err: errors.New("down")}, "udp", []string{"ClusterDNSNotListening"}, "nothing listens", ""},
		{"a ClusterIP without the API is not judged", kl("10.96.0.99"), nil, "udp", []string{"ClusterDNSServed"}, "the Service side of clusterDNS 10.96.0.99 was not checked (no cluster access)", ""},
		{"systemd-resolved's stub as resolvConf", withResolv(kl("10.96.0.10"), "/run/systemd/resolve/stub-resolv"), api, "udp", []string{"ResolvConfLoopback"}, "names the loopback nameserver 127.0.0.53 (systemd-resolved's stub)", ""},
		{"resolvConf missing", withResolv(kl("10.96.0.10"), "/etc/kubernetes/resolv.conf"), api, "udp", []string{"ResolvConfMissing"}, "/etc/kubernetes/resolv.conf (resolvConf in /var/lib/kubelet/config.yaml) does not exist", ""},
		{"no clusterDNS: not applicable", kl(), api, "udp", nil, "", ""},
		{"no clusterDNS, loopback resolvConf", withResolv(kl(), "/run/systemd/resolve/stub-resolv"), api, "udp", []string{"ResolvConfLoopback"}, "127.0.0.53", ""},
		{"no kubelet: not applicable", fakeKubeletDNS{}, api, "udp", nil, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := runDef(t, ClusterDNS(ClusterDNSDeps{Kubelet: tc.kubelet, Services: tc.api, FS: root(tc.udp), Addrs: local}))
			if tc.reasons == nil {
				var na *check.NotApplicableError
				if !errors.As(err, &na) {
					t.Fatalf("want not applicable, got %v %+v", err, f)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := findingReasons(f); !slices.Equal(got, tc.reasons) {
				t.Fatalf("reasons %v, want %v: %+v", got, tc.reasons, f)
			}
			if !strings.Contains(f[0].Message, tc.msg) {
				t.Errorf("message %q does not say %q", f[0].Message, tc.msg)
			}
			if f[0].Condition != check.ConditionClusterDNS {
				t.Errorf("condition %q", f[0].Condition)
			}
			if o := f[0].Object; tc.object == "" && !o.IsNode() || tc.object != "" && o.Kind+" "+o.Namespace+"/"+o.Name != tc.object {
				t.Errorf("object %+v, want %q", o, tc.object)
			}
			if f[0].Severity == check.SeverityProblem && f[0].Details["setting"] == "" {
				t.Errorf("problem without the kubelet setting: %+v", f[0].Details)
			}
		})
	}
	t.Run("the fix for a loopback resolvConf", func(t *testing.T) {
		f, _ := runDef(t, ClusterDNS(ClusterDNSDeps{Kubelet: withResolv(kl("10.96.0.10"), "/run/systemd/resolve/stub-resolv"), Services: api, FS: root("udp"), Addrs: local}))
		if len(f) != 1 || !strings.Contains(f[0].Message, "resolvConf: /run/systemd/resolve/resolv.conf") {
			t.Errorf("no fix in %+v", f)
		}
	})
	t.Run("the kubelet's config file not under the host root", func(t *testing.T) {
		_, err := runDef(t, ClusterDNS(ClusterDNSDeps{Kubelet: fakeKubeletDNS{found: true, err: fmt.Errorf("kubelet (pid 42) config file: %w", fs.ErrNotExist)}}))
		var na *check.NotApplicableError
		if !errors.As(err, &na) || !strings.Contains(err.Error(), "pid 42") {
			t.Errorf("want not applicable naming the file, got %v", err)
		}
	})
	t.Run("the kubelet reader fails", func(t *testing.T) {
		_, err := runDef(t, ClusterDNS(ClusterDNSDeps{Kubelet: fakeKubeletDNS{found: true, err: errors.New("kubelet config file: permission denied")}}))
		var na *check.NotApplicableError
		if err == nil || errors.As(err, &na) {
			t.Errorf("want an error, got %v", err)
		}
	})
}

func TestClusterDNSRules(t *testing.T) {
	svcs, eps := loadAPI(t, "api-iptables.json")
	nat := string(readKP(t, "iptables-nft-nat.txt"))
	filter := string(readKP(t, "iptables-nft-filter.txt"))
	now := time.Date(2026, 11, 23, 16, 0, 0, 0, time.UTC)
	clk := clocktesting.NewFakeClock(now)
	noJump := strings.Replace(nat, "-A KUBE-SERVICES -d 10.96.77.115/32 -p tcp -m comment --comment \"dp/web:http cluster IP\" -m tcp --dport 80 -j KUBE-SVC-IFGUBRKS5UGRVAEJ\n", "", 1)
	if noJump == nat {
		t.Fatal("fixture has no KUBE-SERVICES jump for dp/web:http")
	}
	api := fakeLister{svcs: svcs, eps: eps}
	kl := fakeKubeletDNS{found: true, c: KubeletDNSConfig{ClusterDNS: []string{"10.96.77.115"}, ClusterDNSFrom: "the kubelet's --cluster-dns flag"}}
	for _, tc := range []struct {
		name, nat string
		sync      kubeproxy.KubeProxySync
		reason    string
		msg       string
	}{
		{"rules verified", nat, settledSync(now.Add(-time.Minute)), "ClusterDNSServed", "Service dp/web, 2 ready endpoints, its iptables rules on this node verified"},
		{"ClusterIP not programmed, kube-proxy settled", noJump, settledSync(now.Add(-time.Minute)), "ClusterDNSRulesBroken", "this node's iptables rules for port dp/web:http (IPv4 TCP) are broken: ServicePortNotProgrammed"},
		{"ClusterIP not programmed, kube-proxy still writing", noJump, kubeproxy.KubeProxySync{LastSync: map[string]time.Time{"IPv4": now.Add(-time.Minute)}, LastQueued: map[string]time.Time{"IPv4": now}}, "ClusterDNSServed", "not verified yet"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rules := &kubeproxy.KubeProxyDeps{Services: api, IPTables: fakeSaver{"nft/nat": tc.nat, "nft/filter": filter}, NFT: fakeNFT{},
				KubeProxy: fakeKP{mode: "iptables", sync: tc.sync}, Clock: clk}
			f, err := runDef(t, ClusterDNS(ClusterDNSDeps{Kubelet: kl, Services: api, FS: fstest.MapFS{}, Addrs: fakeAddrs{}, Rules: rules}))
			if err != nil {
				t.Fatal(err)
			}
			if got := findingReasons(f); !slices.Equal(got, []string{tc.reason}) {
				t.Fatalf("reasons %v, want %s: %+v", got, tc.reason, f)
			}
			if !strings.Contains(f[0].Message, tc.msg) {
				t.Errorf("message %q does not say %q", f[0].Message, tc.msg)
			}
			if tc.reason == "ClusterDNSRulesBroken" && (f[0].Object.Name != "web" || f[0].Details["setting"] == "") {
				t.Errorf("object %+v details %+v", f[0].Object, f[0].Details)
			}
		})
	}
}
