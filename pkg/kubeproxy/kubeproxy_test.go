package kubeproxy

import (
	"github.com/node-doctor/node-doctor/pkg/dataplane"

	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// loadAPI reads `kubectl get svc,endpointslices -A -o json` as captured from
// the harness node.
func loadAPI(t testing.TB, name string) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
	t.Helper()
	var list struct{ Items []json.RawMessage }
	if err := json.Unmarshal(readKP(t, name), &list); err != nil {
		t.Fatal(err)
	}
	var svcs []*corev1.Service
	var eps []*discoveryv1.EndpointSlice
	for _, raw := range list.Items {
		var k struct{ Kind string }
		_ = json.Unmarshal(raw, &k)
		switch k.Kind {
		case "Service":
			s := &corev1.Service{}
			if err := json.Unmarshal(raw, s); err != nil {
				t.Fatal(err)
			}
			svcs = append(svcs, s)
		case "EndpointSlice":
			s := &discoveryv1.EndpointSlice{}
			if err := json.Unmarshal(raw, s); err != nil {
				t.Fatal(err)
			}
			eps = append(eps, s)
		}
	}
	return svcs, eps
}

func TestChainNamesMatchRealKubeProxy(t *testing.T) {
	// Names read off real kube-proxy v1.37.2 output in testdata/kubeproxy.
	web := ServicePortName{Namespace: "dp", Name: "web", Port: "http", Protocol: "tcp"}
	if got := IPTablesChainsFor(web).SVC; got != "KUBE-SVC-IFGUBRKS5UGRVAEJ" {
		t.Errorf("SVC %s", got)
	}
	if got := IPTablesEndpointChain(web, "10.244.0.3:8080"); got != "KUBE-SEP-2XV3PIRSHTAXQ3O3" {
		t.Errorf("SEP %s", got)
	}
	dns := ServicePortName{Namespace: "dp", Name: "web", Port: "dns", Protocol: "udp"}
	if got := IPTablesChainsFor(dns).SVC; got != "KUBE-SVC-SA3E6X3O22IS4JBI" {
		t.Errorf("SVC udp %s", got)
	}
	np := ServicePortName{Namespace: "dp", Name: "np-local", Protocol: "tcp"}
	c := IPTablesChainsFor(np)
	if c.EXT != "KUBE-EXT-QZRUK5RJDEVTJUTS" || c.SVL != "KUBE-SVL-QZRUK5RJDEVTJUTS" {
		t.Errorf("EXT/SVL %+v", c)
	}
	kube := ServicePortName{Namespace: "default", Name: "kubernetes", Port: "https", Protocol: "tcp"}
	if got := IPTablesChainsFor(kube).SVC; got != "KUBE-SVC-NPX46M4PTMTKRN6Y" {
		t.Errorf("kubernetes SVC %s", got)
	}
	if got := NFTablesChainsFor(web).Service; got != "service-G72YLFXC-dp/web/tcp/http" {
		t.Errorf("nft service %s", got)
	}
	if got := NFTablesChainsFor(np).External; got != "external-EVWWXPC6-dp/np-local/tcp/" {
		t.Errorf("nft external %s", got)
	}
	if got := NFTablesChainsFor(kube).Service; got != "service-2QRHZV4L-default/kubernetes/tcp/https" {
		t.Errorf("nft kubernetes %s", got)
	}
}

func TestCompareRealHealthy(t *testing.T) {
	cases := []struct {
		name, api string
		prog      func(t *testing.T) *Programmed
	}{
		{"iptables", "api-iptables.json", func(t *testing.T) *Programmed {
			return ProgrammedFromIPTables(loadIPT(t, "iptables-nft-nat.txt", "iptables-nft-filter.txt"))
		}},
		{"iptables-after-pod-delete", "api-iptables-after-delete.json", func(t *testing.T) *Programmed {
			return ProgrammedFromIPTables(loadIPT(t, "iptables-nft-nat-after-delete.txt"))
		}},
		{"nftables", "api-nftables.json", func(t *testing.T) *Programmed {
			nt, err := dataplane.ParseNFTJSON(readKP(t, "nft-ip-kube-proxy.json"))
			if err != nil {
				t.Fatal(err)
			}
			return ProgrammedFromNFT(nt)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			svcs, eps := loadAPI(t, c.api)
			desired := v4Only(DesiredServicePorts(svcs, eps, "node-doctor-e2e"))
			disc, verified, noEP := Compare(desired, c.prog(t))
			for _, d := range disc {
				t.Errorf("unexpected %s %s: expected %s, actual %s", d.Reason, d.Service, d.Expected, d.Actual)
			}
			// web:http, web:dns, np-local, kubernetes; empty has no endpoints.
			if verified != 4 || noEP != 1 {
				t.Errorf("verified %d, no endpoints %d", verified, noEP)
			}
		})
	}
}

func v4Only(d []DesiredPort) []DesiredPort {
	return slices.DeleteFunc(d, func(p DesiredPort) bool { return p.IPv6 })
}

func TestCompareFindsBreakage(t *testing.T) {
	svcs, eps := loadAPI(t, "api-iptables.json")
	desired := v4Only(DesiredServicePorts(svcs, eps, "node-doctor-e2e"))
	nat := string(readKP(t, "iptables-nft-nat.txt"))
	filter := string(readKP(t, "iptables-nft-filter.txt"))
	drop := func(s, substr string) string {
		var out []string
		for _, l := range strings.Split(s, "\n") {
			if !strings.Contains(l, substr) {
				out = append(out, l)
			}
		}
		return strings.Join(out, "\n")
	}
	cases := []struct {
		name, nat, reason string
	}{
		{"sep jump deleted", drop(nat, `"dp/web:http -> 10.244.0.3:8080" -j KUBE-SEP`), "EndpointMissing"},
		{"cluster ip rule deleted", drop(nat, `"dp/web:dns cluster IP" -m udp --dport 53 -j KUBE-SVC`), "ServicePortNotProgrammed"},
		{"nodeport deleted", drop(nat, `--dport 30080`), "NodePortNotProgrammed"},
		{"external ip deleted", drop(nat, `dp/np-local external IP`), "ExternalIPNotProgrammed"},
		{"stale dnat", strings.Replace(nat, "COMMIT", ":KUBE-SEP-STALE0000000000 - [0:0]\n-A KUBE-SVC-IFGUBRKS5UGRVAEJ -m comment --comment \"dp/web:http -> 10.244.0.9:8080\" -j KUBE-SEP-STALE0000000000\n-A KUBE-SEP-STALE0000000000 -p tcp -m comment --comment \"dp/web:http\" -m tcp -j DNAT --to-destination 10.244.0.9:8080\nCOMMIT", 1), "StaleEndpoint"},
		{"wrong port", strings.Replace(nat, "--to-destination 10.244.0.3:8080", "--to-destination 10.244.0.3:9999", 1), "EndpointWrongPort"},
		{"stale chain", strings.Replace(nat, "COMMIT", ":KUBE-SVC-AAAAAAAAAAAAAAAA - [0:0]\n-A KUBE-SVC-AAAAAAAAAAAAAAAA -m comment --comment \"gone/svc:http -> 10.244.0.7:80\" -j KUBE-MARK-MASQ\nCOMMIT", 1), "StaleServiceChain"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ipt, err := dataplane.ParseIPTablesSave(strings.NewReader(c.nat + "\n" + filter))
			if err != nil {
				t.Fatal(err)
			}
			disc, _, _ := Compare(desired, ProgrammedFromIPTables(ipt))
			var reasons []string
			for _, d := range disc {
				reasons = append(reasons, d.Reason)
				if d.Service.Name == "" || d.Expected == "" || d.Actual == "" {
					t.Errorf("incomplete discrepancy %+v", d)
				}
			}
			if !slices.Contains(reasons, c.reason) {
				t.Errorf("want %s, got %v", c.reason, disc)
			}
		})
	}
}

// topoEP is one endpoint for the topology tests.
type topoEP struct {
	ip                 string
	node               string
	ready, terminating bool
	zones, nodes       []string
}

func topoService(tweak func(*corev1.Service), eps ...topoEP) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
	svc := &corev1.Service{}
	svc.Namespace, svc.Name = "ns", "svc"
	svc.Spec.ClusterIP, svc.Spec.ClusterIPs = "10.96.0.10", []string{"10.96.0.10"}
	svc.Spec.Type = corev1.ServiceTypeClusterIP
	svc.Spec.Ports = []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, NodePort: 30080}}
	if tweak != nil {
		tweak(svc)
	}
	sl := &discoveryv1.EndpointSlice{AddressType: discoveryv1.AddressTypeIPv4}
	sl.Namespace, sl.Name = "ns", "svc-1"
	sl.Labels = map[string]string{discoveryv1.LabelServiceName: "svc"}
	name, port, proto := "http", int32(8080), corev1.ProtocolTCP
	sl.Ports = []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &proto}}
	for _, e := range eps {
		ready, serving, term := e.ready, e.ready || e.terminating, e.terminating
		ep := discoveryv1.Endpoint{Addresses: []string{e.ip}, Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &term}}
		if e.node != "" {
			n := e.node
			ep.NodeName = &n
		}
		if len(e.zones)+len(e.nodes) > 0 {
			ep.Hints = &discoveryv1.EndpointHints{}
			for _, z := range e.zones {
				ep.Hints.ForZones = append(ep.Hints.ForZones, discoveryv1.ForZone{Name: z})
			}
			for _, n := range e.nodes {
				ep.Hints.ForNodes = append(ep.Hints.ForNodes, discoveryv1.ForNode{Name: n})
			}
		}
		sl.Endpoints = append(sl.Endpoints, ep)
	}
	return []*corev1.Service{svc}, []*discoveryv1.EndpointSlice{sl}
}

// TestTopologyFilter covers kube-proxy's CategorizeEndpoints rules (v1.37):
// hints narrow the Cluster set, with every fallback.
func TestTopologyFilter(t *testing.T) {
	me := NodeTopology{Name: "n1", Zone: "a"}
	local := func(s *corev1.Service) {
		p := corev1.ServiceInternalTrafficPolicyLocal
		s.Spec.InternalTrafficPolicy = &p
	}
	etpLocal := func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeNodePort
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	}
	for _, tc := range []struct {
		name           string
		node           NodeTopology
		tweak          func(*corev1.Service)
		eps            []topoEP
		cluster, local []string
		reachable      []string
		topology       string
	}{
		{name: "no hints: every ready endpoint", node: me,
			eps:     []topoEP{{ip: "10.0.0.1", ready: true}, {ip: "10.0.0.2", ready: true}},
			cluster: []string{"10.0.0.1:8080", "10.0.0.2:8080"}},
		{name: "zone hints: only this zone's", node: me,
			eps:      []topoEP{{ip: "10.0.0.1", ready: true, zones: []string{"a"}}, {ip: "10.0.0.2", ready: true, zones: []string{"b"}}, {ip: "10.0.0.3", ready: true, zones: []string{"a", "b"}}},
			cluster:  []string{"10.0.0.1:8080", "10.0.0.3:8080"},
			topology: "PreferSameZone a"},
		{name: "zone hints, one ready endpoint without: ignored", node: me,
			eps:     []topoEP{{ip: "10.0.0.1", ready: true, zones: []string{"a"}}, {ip: "10.0.0.2", ready: true}},
			cluster: []string{"10.0.0.1:8080", "10.0.0.2:8080"}},
		{name: "a not-ready endpoint without hints does not cancel them", node: me,
			eps:      []topoEP{{ip: "10.0.0.1", ready: true, zones: []string{"a"}}, {ip: "10.0.0.2", ready: true, zones: []string{"b"}}, {ip: "10.0.0.9"}},
			cluster:  []string{"10.0.0.1:8080"},
			topology: "PreferSameZone a"},
		{name: "no hint for this zone: all", node: me,
			eps:     []topoEP{{ip: "10.0.0.1", ready: true, zones: []string{"b"}}, {ip: "10.0.0.2", ready: true, zones: []string{"c"}}},
			cluster: []string{"10.0.0.1:8080", "10.0.0.2:8080"}},
		{name: "node without zone label: all", node: NodeTopology{Name: "n1"},
			eps:     []topoEP{{ip: "10.0.0.1", ready: true, zones: []string{"a"}}, {ip: "10.0.0.2", ready: true, zones: []string{"b"}}},
			cluster: []string{"10.0.0.1:8080", "10.0.0.2:8080"}},
		{name: "hint for this zone only on a terminating endpoint: all ready", node: me,
			eps:     []topoEP{{ip: "10.0.0.1", terminating: true, zones: []string{"a"}}, {ip: "10.0.0.2", ready: true, zones: []string{"b"}}},
			cluster: []string{"10.0.0.2:8080"}},
		{name: "node hints win over zone hints", node: me,
			eps:      []topoEP{{ip: "10.0.0.1", ready: true, zones: []string{"a"}, nodes: []string{"n1"}}, {ip: "10.0.0.2", ready: true, zones: []string{"a"}, nodes: []string{"n2"}}},
			cluster:  []string{"10.0.0.1:8080"},
			topology: "PreferSameNode n1"},
		{name: "node hints, none for this node: zone hints", node: me,
			eps:      []topoEP{{ip: "10.0.0.1", ready: true, zones: []string{"a"}, nodes: []string{"n2"}}, {ip: "10.0.0.2", ready: true, zones: []string{"b"}, nodes: []string{"n3"}}},
			cluster:  []string{"10.0.0.1:8080"},
			topology: "PreferSameZone a"},
		{name: "node hints incomplete: zone hints", node: me,
			eps:      []topoEP{{ip: "10.0.0.1", ready: true, zones: []string{"a"}, nodes: []string{"n1"}}, {ip: "10.0.0.2", ready: true, zones: []string{"b"}}},
			cluster:  []string{"10.0.0.1:8080"},
			topology: "PreferSameZone a"},
		{name: "no ready endpoint: terminating ones, unfiltered", node: me,
			eps:     []topoEP{{ip: "10.0.0.1", terminating: true, zones: []string{"b"}}, {ip: "10.0.0.2", terminating: true, zones: []string{"a"}}},
			cluster: []string{"10.0.0.1:8080", "10.0.0.2:8080"}},
		{name: "internalTrafficPolicy Local: hints do not apply", node: me, tweak: local,
			eps:     []topoEP{{ip: "10.0.0.1", ready: true, node: "n1", zones: []string{"b"}}, {ip: "10.0.0.2", ready: true, node: "n2", zones: []string{"a"}}},
			cluster: []string{"10.0.0.2:8080"}, local: []string{"10.0.0.1:8080"},
			reachable: []string{"10.0.0.1:8080"}},
		{name: "externalTrafficPolicy Local: ClusterIP filtered, NodePort local", node: me, tweak: etpLocal,
			eps:     []topoEP{{ip: "10.0.0.1", ready: true, node: "n1", zones: []string{"b"}}, {ip: "10.0.0.2", ready: true, node: "n2", zones: []string{"a"}}},
			cluster: []string{"10.0.0.2:8080"}, local: []string{"10.0.0.1:8080"},
			reachable: []string{"10.0.0.2:8080", "10.0.0.1:8080"},
			topology:  "PreferSameZone a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svcs, eps := topoService(tc.tweak, tc.eps...)
			d := DesiredServicePortsOn(svcs, eps, tc.node)
			if len(d) != 1 {
				t.Fatalf("%d desired ports", len(d))
			}
			if !slices.Equal(d[0].Cluster, tc.cluster) || !slices.Equal(d[0].Local, tc.local) || d[0].Topology != tc.topology {
				t.Errorf("cluster %v local %v topology %q; want %v %v %q", d[0].Cluster, d[0].Local, d[0].Topology, tc.cluster, tc.local, tc.topology)
			}
			if tc.reachable == nil {
				tc.reachable = tc.cluster
			}
			if got := d[0].ReachableEndpoints(); !slices.Equal(got, tc.reachable) {
				t.Errorf("reachable %v, want %v", got, tc.reachable)
			}
			if !d[0].HasEndpoints {
				t.Error("HasEndpoints false")
			}
		})
	}
}

// TestCompareTopology: with zone hints the node must DNAT to this zone's
// endpoints only; the other zone's is a stale endpoint, a missing one is missing.
func TestCompareTopology(t *testing.T) {
	svcs, eps := topoService(nil, topoEP{ip: "10.0.0.1", ready: true, zones: []string{"a"}}, topoEP{ip: "10.0.0.2", ready: true, zones: []string{"b"}}, topoEP{ip: "10.0.0.3", ready: true, zones: []string{"a"}})
	d := DesiredServicePortsOn(svcs, eps, NodeTopology{Name: "n1", Zone: "a"})
	chain := IPTablesChainsFor(d[0].Name).SVC
	prog := func(ep ...string) *Programmed {
		p := newProgrammed("iptables")
		p.Services["10.96.0.10/tcp/80"] = chain
		p.Endpoints[chain] = ep
		return p
	}
	if disc, v, _ := Compare(d, prog("10.0.0.1:8080", "10.0.0.3:8080")); len(disc) != 0 || v != 1 {
		t.Errorf("zone's endpoints only: %+v verified %d", disc, v)
	}
	disc, _, _ := Compare(d, prog("10.0.0.1:8080"))
	if len(disc) != 1 || disc[0].Reason != "EndpointMissing" || !strings.Contains(disc[0].Expected, "PreferSameZone a") {
		t.Errorf("missing: %+v", disc)
	}
	disc, _, _ = Compare(d, prog("10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"))
	if len(disc) != 1 || disc[0].Reason != "StaleEndpoint" || !strings.Contains(disc[0].Actual, "10.0.0.2:8080") {
		t.Errorf("other zone's endpoint: %+v", disc)
	}
}

func FuzzParseIPTablesSave(f *testing.F) {
	for _, n := range []string{"iptables-nft-nat.txt", "iptables-nft-filter.txt", "ip6tables-nft-nat.txt"} {
		b, err := os.ReadFile(filepath.Join("../dataplane/testdata/kubeproxy", n))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("*nat\n-A X -m comment --comment \"a \\\" b\" -j Y\nCOMMIT\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ipt, err := dataplane.ParseIPTablesSave(bytes.NewReader(b))
		if err != nil {
			return
		}
		for _, tb := range ipt.Tables {
			if len(tb.Order) != len(tb.Chains) {
				t.Fatalf("order %d chains %d", len(tb.Order), len(tb.Chains))
			}
		}
		// The check streams the rules; tests and this target store them:
		// both must read the same.
		stored := ProgrammedFromIPTables(ipt)
		streamed, err := streamIPTables(b)
		if err != nil {
			t.Fatalf("stored parse succeeded, streamed failed: %v", err)
		}
		if !reflect.DeepEqual(stored, streamed) {
			t.Fatalf("streamed %+v\nstored   %+v", streamed, stored)
		}
	})
}

func FuzzParseNFTJSON(f *testing.F) {
	// A small cut of real output: the fuzzer gets nowhere in a short run
	// from the 15 KB captures.
	for _, n := range []string{"nft-ip-kube-proxy-small.json"} {
		b, err := os.ReadFile(filepath.Join("../dataplane/testdata/kubeproxy", n))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	// Named sets: scalars, and an element with a comment and a timeout.
	f.Add([]byte(`{"nftables": [{"set": {"name": "cluster-ips", "type": "ipv4_addr", "elem": ["10.96.0.1",
		{"elem": {"val": "10.96.0.2", "timeout": 60, "comment": "a/b:c"}}]}}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		nt, err := dataplane.ParseNFTJSON(b)
		if err != nil {
			return
		}
		_ = ProgrammedFromNFT(nt)
	})
}

// The nftables sets, broken on the real v1.37.2 table: each break is found
// and attributed to its Service port, with the Service's change time (so a
// Service created moments ago is pending, not a finding).
func TestCompareNFTSets(t *testing.T) {
	svcs, eps := loadAPI(t, "api-nftables.json")
	desired := v4Only(DesiredServicePorts(svcs, eps, "node-doctor-e2e"))
	drop := func(st *dataplane.NFTSet, key string) {
		st.Elements = slices.DeleteFunc(st.Elements, func(e dataplane.NFTElement) bool { return strings.Join(e.Key, " . ") == key })
	}
	cases := []struct {
		name   string
		brk    func(nt *dataplane.NFTTable, p *Programmed)
		reason string
		svc    string
		want   string
	}{
		{"cluster ip deleted", func(nt *dataplane.NFTTable, _ *Programmed) { drop(nt.Sets["cluster-ips"], "10.96.36.25") },
			"ClusterIPNotInSet", "dp/np-local", "element 10.96.36.25 in set cluster-ips"},
		{"cluster ip without endpoints deleted", func(nt *dataplane.NFTTable, _ *Programmed) { drop(nt.Sets["cluster-ips"], "10.96.240.14") },
			"ClusterIPNotInSet", "dp/empty:http", "element 10.96.240.14 in set cluster-ips"},
		{"stale cluster ip", func(nt *dataplane.NFTTable, _ *Programmed) {
			nt.Sets["cluster-ips"].Elements = append(nt.Sets["cluster-ips"].Elements, dataplane.NFTElement{Key: []string{"10.96.9.9"}})
		}, "StaleSetElement", "/(no Service)", "no element 10.96.9.9 in set cluster-ips"},
		{"hairpin deleted", func(nt *dataplane.NFTTable, _ *Programmed) {
			drop(nt.Sets["hairpin-connections"], "10.244.0.3 . 10.244.0.3 . udp . 8053")
		}, "HairpinNotProgrammed", "dp/web:dns", "element 10.244.0.3 . 10.244.0.3 . udp . 8053 in set hairpin-connections"},
		{"node ip deleted", func(nt *dataplane.NFTTable, p *Programmed) {
			nt.Sets["nodeport-ips"].Elements = nil
			p.NodePortIPs = []string{"198.51.100.10"}
		}, "NodeIPNotInSet", "dp/np-local", "element 198.51.100.10 in set nodeport-ips"},
		{"undecoded set", func(nt *dataplane.NFTTable, p *Programmed) {
			drop(nt.Sets["cluster-ips"], "10.96.36.25")
			nt.Unknown = append(nt.Unknown, dataplane.NFTUnknown{Where: "set cluster-ips", Why: "interval set", Raw: "00"})
		}, "RulesNotUnderstood", "dp/np-local", "element 10.96.36.25 in set cluster-ips"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			nt, err := dataplane.ParseNFTJSON(readKP(t, "nft-ip-kube-proxy.json"))
			if err != nil {
				t.Fatal(err)
			}
			var p Programmed
			c.brk(nt, &p)
			prog := ProgrammedFromNFT(nt)
			prog.NodePortIPs = p.NodePortIPs
			disc, _, _ := Compare(desired, prog)
			if len(disc) != 1 || disc[0].Reason != c.reason || disc[0].Service.String() != c.svc || disc[0].Expected != c.want {
				t.Fatalf("got %+v", disc)
			}
			if c.reason != "StaleSetElement" && disc[0].Changed.IsZero() {
				t.Errorf("no change time: %+v", disc[0])
			}
			if (c.reason == "RulesNotUnderstood") != (disc[0].Unverifiable != "") {
				t.Errorf("unverifiable %q", disc[0].Unverifiable)
			}
		})
	}
}

func TestNodePortSetIPs(t *testing.T) {
	node := &corev1.Node{Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: "198.51.100.10"}, {Type: corev1.NodeExternalIP, Address: "203.0.113.1"},
		{Type: corev1.NodeInternalIP, Address: "2001:db8::10"}, {Type: corev1.NodeHostName, Address: "n"}}}}
	cases := []struct {
		addrs []string
		known bool
		v6    bool
		want  []string
	}{
		{[]string{"198.51.100.10/32"}, true, false, []string{"198.51.100.10"}},
		{[]string{"198.51.100.0/24", "2001:db8::/64"}, true, true, []string{"2001:db8::10"}},
		{[]string{"10.0.0.0/8"}, true, false, nil}, // the InternalIP is outside: kube-proxy may have others
		{nil, true, false, nil}, // default ("primary"): kube-proxy's own node IP
		{[]string{"primary", "198.51.100.0/24"}, true, false, nil},
		{[]string{"198.51.100.10/32"}, false, false, nil}, // /configz did not answer
	}
	for _, c := range cases {
		if got := nodePortSetIPs(node, c.v6, c.addrs, c.known); !slices.Equal(got, c.want) {
			t.Errorf("%v v6=%v known=%v: %v, want %v", c.addrs, c.v6, c.known, got, c.want)
		}
	}
	if nodePortSetIPs(nil, false, []string{"198.51.100.10/32"}, true) != nil {
		t.Error("no node")
	}
}
