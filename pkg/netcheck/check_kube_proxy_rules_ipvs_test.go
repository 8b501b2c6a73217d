package netcheck

import (
	"github.com/node-doctor/node-doctor/pkg/dataplane"

	"github.com/node-doctor/node-doctor/pkg/kubeproxy"

	"context"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/ipvs"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/node-doctor/node-doctor/pkg/check"
)

// kubeProxyIPVSState is what kube-proxy's IPVS proxier programs for the
// captured Services (api-iptables.json) on node-doctor-e2e with node IP
// 192.0.2.10, written out by hand: virtual servers for ClusterIPs, the
// external IP and the NodePort on the node IP (externalTrafficPolicy Local:
// local endpoints only, both pods are local), every service IP on
// kube-ipvs0, and its ipsets.
func kubeProxyIPVSState() *fakeIPVSNode {
	return &fakeIPVSNode{
		vs: []dataplane.IPVSVirtual{
			ipvsVS("10.96.0.1", 6, 443, "198.51.100.10:6443"),
			ipvsVS("10.96.231.39", 6, 80),
			ipvsVS("10.96.4.72", 6, 8080, "10.244.0.2:8080", "10.244.0.3:8080"),
			ipvsVS("203.0.113.7", 6, 8080, "10.244.0.2:8080", "10.244.0.3:8080"),
			ipvsVS("192.0.2.10", 6, 30080, "10.244.0.2:8080", "10.244.0.3:8080"),
			ipvsVS("10.96.77.115", 6, 80, "10.244.0.2:8080", "10.244.0.3:8080"),
			ipvsVS("10.96.77.115", 17, 53, "10.244.0.2:8053", "10.244.0.3:8053"),
		},
		dummy: []string{"10.96.0.1", "10.96.231.39", "10.96.4.72", "203.0.113.7", "10.96.77.115"},
		sets: map[string]dataplane.IPSet{
			"KUBE-CLUSTER-IP": {Type: "hash:ip,port", Entries: []string{"10.96.0.1,tcp:443", "10.96.231.39,tcp:80", "10.96.4.72,tcp:8080",
				"10.96.77.115,tcp:80", "10.96.77.115,udp:53"}},
			"KUBE-EXTERNAL-IP":       {Type: "hash:ip,port", Entries: nil},
			"KUBE-EXTERNAL-IP-LOCAL": {Type: "hash:ip,port", Entries: []string{"203.0.113.7,tcp:8080"}},
			"KUBE-LOAD-BALANCER":     {Type: "hash:ip,port", Entries: nil},
			"KUBE-LOOP-BACK": {Type: "hash:ip,port,ip", Entries: []string{"10.244.0.2,tcp:8080,10.244.0.2", "10.244.0.3,tcp:8080,10.244.0.3",
				"10.244.0.2,udp:8053,10.244.0.2", "10.244.0.3,udp:8053,10.244.0.3"}},
			"KUBE-NODE-PORT-TCP":       {Type: "bitmap:port", Entries: []string{"30080"}},
			"KUBE-NODE-PORT-LOCAL-TCP": {Type: "bitmap:port", Entries: []string{"30080"}},
			"KUBE-NODE-PORT-UDP":       {Type: "bitmap:port", Entries: nil},
		},
	}
}

func runIPVS(t *testing.T, st *fakeIPVSNode, nodePortAddrs ...string) []check.Finding {
	t.Helper()
	svcs, eps := loadAPI(t, "api-iptables.json")
	now := time.Date(2026, 11, 23, 16, 0, 0, 0, time.UTC)
	d := kubeproxy.KubeProxyDeps{Services: fakeLister{svcs: svcs, eps: eps, node: harnessNode()}, IPVS: st,
		KubeProxy: fakeKP{mode: "ipvs", sync: settledSync(now.Add(-time.Minute)), nodePortAddrs: nodePortAddrs}, Clock: clocktesting.NewFakeClock(now)}
	f, err := runDef(t, KubeProxyRules(d))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// problems returns reason -> expected of the problem findings.
func problems(f []check.Finding) map[string][]string {
	out := map[string][]string{}
	for _, x := range f {
		if x.Severity == check.SeverityProblem {
			out[x.Reason] = append(out[x.Reason], x.Details["expected"])
		}
	}
	return out
}

func TestIPVSNodeMatchesAPI(t *testing.T) {
	st := kubeProxyIPVSState()
	st.dummy = append(st.dummy, "fe80::b0c1:2ff:fe03:405") // the link is up
	// A pod that is going away drains with weight 0: not an endpoint.
	st.vs[4].Destinations = append(st.vs[4].Destinations, ipvs.Destination{AddressFamily: syscall.AF_INET,
		Address: netip.MustParseAddr("10.244.0.7").AsSlice(), Port: 8080, Weight: 0})
	f := runIPVS(t, st)
	if p := problems(f); len(p) != 0 {
		t.Fatalf("healthy node: %v", p)
	}
	if !slices.ContainsFunc(f, func(x check.Finding) bool { return x.Severity == check.SeverityOK && x.Details["verified"] == "4" }) {
		t.Fatalf("want 4 verified: %+v", f)
	}
}

func TestIPVSNodeBreakages(t *testing.T) {
	for _, c := range []struct {
		name     string
		breakIt  func(s *fakeIPVSNode)
		reason   string
		expected string
		service  string
	}{
		{"NodePort virtual server gone", func(s *fakeIPVSNode) {
			s.vs = slices.DeleteFunc(s.vs, func(v dataplane.IPVSVirtual) bool { return v.Service.Port == 30080 })
		}, "NodePortNotProgrammed", "virtual server 192.0.2.10/tcp/30080 -> 10.244.0.2:8080, 10.244.0.3:8080", "dp/np-local"},
		{"NodePort on a second node IP lacks an endpoint", func(s *fakeIPVSNode) {
			s.vs = append(s.vs, ipvsVS("192.0.2.11", 6, 30080, "10.244.0.2:8080"))
		}, "EndpointMissing", "ipvs:192.0.2.11/tcp/30080 DNAT to 10.244.0.3:8080", "dp/np-local"},
		{"external IP real server stale", func(s *fakeIPVSNode) {
			s.vs[3] = ipvsVS("203.0.113.7", 6, 8080, "10.244.0.2:8080", "10.244.0.3:8080", "10.244.0.9:8080")
		}, "StaleEndpoint", "no DNAT to 10.244.0.9:8080 (want: 10.244.0.2:8080, 10.244.0.3:8080)", "dp/np-local"},
		{"ClusterIP not on kube-ipvs0", func(s *fakeIPVSNode) {
			s.dummy = slices.DeleteFunc(s.dummy, func(a string) bool { return a == "10.96.77.115" })
		}, "ServiceIPNotBound", "10.96.77.115 on kube-ipvs0", "dp/web:http"},
		{"external IP not on kube-ipvs0", func(s *fakeIPVSNode) {
			s.dummy = slices.DeleteFunc(s.dummy, func(a string) bool { return a == "203.0.113.7" })
		}, "ServiceIPNotBound", "203.0.113.7 on kube-ipvs0", "dp/np-local"},
		{"stale address on kube-ipvs0", func(s *fakeIPVSNode) { s.dummy = append(s.dummy, "10.96.9.9") },
			"StaleServiceIP", "no 10.96.9.9 on kube-ipvs0 (no Service has it)", "/(no Service)"},
		{"no kube-ipvs0", func(s *fakeIPVSNode) { s.noLink = true },
			"IPVSDummyMissing", "interface kube-ipvs0 with the service IPs", "/(no Service)"},
		{"stale virtual server", func(s *fakeIPVSNode) { s.vs = append(s.vs, ipvsVS("10.96.50.50", 6, 80, "10.244.0.7:80")) },
			"StaleVirtualServer", "no virtual server 10.96.50.50/tcp/80", "/(no Service)"},
		{"KUBE-CLUSTER-IP entry gone", func(s *fakeIPVSNode) {
			e := s.sets["KUBE-CLUSTER-IP"]
			e.Entries = slices.DeleteFunc(slices.Clone(e.Entries), func(x string) bool { return x == "10.96.77.115,udp:53" })
			s.sets["KUBE-CLUSTER-IP"] = e
		}, "IPSetEntryMissing", "KUBE-CLUSTER-IP has 10.96.77.115,udp:53", "dp/web:dns"},
		{"KUBE-NODE-PORT-TCP set gone", func(s *fakeIPVSNode) { delete(s.sets, "KUBE-NODE-PORT-TCP") },
			"IPSetEntryMissing", "KUBE-NODE-PORT-TCP has 30080", "dp/np-local"},
		{"KUBE-LOOP-BACK entry gone", func(s *fakeIPVSNode) {
			e := s.sets["KUBE-LOOP-BACK"]
			e.Entries = e.Entries[1:]
			s.sets["KUBE-LOOP-BACK"] = e
		}, "IPSetEntryMissing", "KUBE-LOOP-BACK has 10.244.0.2,tcp:8080,10.244.0.2", "dp/np-local"},
		{"external IP in no set", func(s *fakeIPVSNode) { s.sets["KUBE-EXTERNAL-IP-LOCAL"] = dataplane.IPSet{Type: "hash:ip,port"} },
			"IPSetEntryMissing", "KUBE-EXTERNAL-IP or KUBE-EXTERNAL-IP-LOCAL or KUBE-LOAD-BALANCER has 203.0.113.7,tcp:8080", "dp/np-local"},
	} {
		t.Run(c.name, func(t *testing.T) {
			st := kubeProxyIPVSState()
			st.sets = maps.Clone(st.sets)
			c.breakIt(st)
			f := runIPVS(t, st)
			var hit *check.Finding
			for i := range f {
				if f[i].Reason == c.reason && f[i].Details["expected"] == c.expected && f[i].Details["service_port"] == c.service {
					hit = &f[i]
				}
			}
			if hit == nil {
				t.Fatalf("no %s for %s with expected %q in %v", c.reason, c.service, c.expected, problems(f))
			}
			if hit.Severity != check.SeverityProblem || hit.Details["actual"] == "" ||
				!strings.Contains(hit.Message, "fix:") || hit.Condition != check.ConditionKubeProxyRules {
				t.Fatalf("finding %+v", hit)
			}
		})
	}
}

// With --nodeport-addresses leaving the InternalIP out, kube-proxy puts
// NodePorts only on the addresses in those CIDRs: not a missing NodePort.
func TestIPVSNodePortAddresses(t *testing.T) {
	onSecondIP := func() *fakeIPVSNode {
		st := kubeProxyIPVSState()
		st.vs[4] = ipvsVS("198.51.100.5", 6, 30080, "10.244.0.2:8080", "10.244.0.3:8080")
		return st
	}
	if p := problems(runIPVS(t, onSecondIP(), "198.51.100.0/24")); len(p) != 0 {
		t.Fatalf("NodePorts where --nodeport-addresses puts them: %v", p)
	}
	if p := problems(runIPVS(t, onSecondIP(), "primary")); len(p["NodePortNotProgrammed"]) != 1 {
		t.Fatalf("\"primary\" includes the InternalIP, whose NodePort is gone: %v", p)
	}
	if p := problems(runIPVS(t, onSecondIP())); len(p["NodePortNotProgrammed"]) != 1 {
		t.Fatalf("kube-proxy's default includes the InternalIP, whose NodePort is gone: %v", p)
	}
	// Only "localhost": the InternalIP is not expected, and the virtual
	// server found on it is still this service's.
	if p := problems(runIPVS(t, kubeProxyIPVSState(), "localhost")); len(p) != 0 {
		t.Fatalf("localhost only: %v", p)
	}
}

// A node IP that carries no NodePort of any service is not expected to
// (kube-proxy's --nodeport-addresses may leave it out), and without ipset or
// kube-ipvs0 readers only virtual servers are compared.
func TestIPVSNodeLimits(t *testing.T) {
	st := kubeProxyIPVSState()
	plain := fakeIPVS(st.vs)
	svcs, eps := loadAPI(t, "api-iptables.json")
	now := time.Date(2026, 11, 23, 16, 0, 0, 0, time.UTC)
	node := harnessNode()
	node.Status.Addresses = append(node.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: "198.18.0.1"})
	d := kubeproxy.KubeProxyDeps{Services: fakeLister{svcs: svcs, eps: eps, node: node}, IPVS: plain,
		KubeProxy: fakeKP{mode: "ipvs", sync: settledSync(now.Add(-time.Minute))}, Clock: clocktesting.NewFakeClock(now)}
	f, err := runDef(t, KubeProxyRules(d))
	if p := problems(f); err != nil || len(p) != 0 {
		t.Fatalf("%v %v", err, p)
	}
}

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
