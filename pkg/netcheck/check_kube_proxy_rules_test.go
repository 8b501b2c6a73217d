package netcheck

import (
	"github.com/node-doctor/node-doctor/pkg/dataplane"

	"github.com/node-doctor/node-doctor/pkg/kubeproxy"

	"bytes"
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/moby/ipvs"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/node-doctor/node-doctor/pkg/check"
	"github.com/node-doctor/node-doctor/pkg/report"
)

type fakeLister struct {
	svcs []*corev1.Service
	eps  []*discoveryv1.EndpointSlice
	node *corev1.Node
	err  error
}

func (f fakeLister) Services() ([]*corev1.Service, error)                  { return f.svcs, f.err }
func (f fakeLister) EndpointSlices() ([]*discoveryv1.EndpointSlice, error) { return f.eps, f.err }
func (f fakeLister) Node() (*corev1.Node, error)                           { return f.node, f.err }
func (f fakeLister) NodeName() string                                      { return "node-doctor-e2e" }

// fakeSaver serves iptables-save text per backend/table.
type fakeSaver map[string]string

func (f fakeSaver) Save(_ context.Context, backend string, v6 bool, table string, into *dataplane.IPTables) error {
	if v6 {
		return nil
	}
	return dataplane.ParseIPTablesSaveInto(strings.NewReader(f[backend+"/"+table]), into)
}

type fakeNFT map[string][]byte

func (f fakeNFT) ListTable(_ context.Context, family, table string, into *dataplane.NFTTable) (bool, error) {
	b, ok := f[family]
	if !ok {
		return false, nil
	}
	return true, dataplane.ParseNFTJSONInto(bytes.NewReader(b), into)
}

type fakeKP struct {
	mode          string
	nodePortAddrs []string
	sync          kubeproxy.KubeProxySync
	h             kubeproxy.KubeProxyHealthz
	err           error
}

func (f fakeKP) ProxyMode(context.Context) (string, error)                   { return f.mode, f.err }
func (f fakeKP) Healthz(context.Context) (kubeproxy.KubeProxyHealthz, error) { return f.h, f.err }
func (f fakeKP) Sync(context.Context) (kubeproxy.KubeProxySync, error)       { return f.sync, f.err }
func (f fakeKP) NodePortAddresses(context.Context) ([]string, error)         { return f.nodePortAddrs, f.err }

func settledSync(t time.Time) kubeproxy.KubeProxySync {
	return kubeproxy.KubeProxySync{LastSync: map[string]time.Time{"IPv4": t}, LastQueued: map[string]time.Time{"IPv4": t}}
}

func runDef(t *testing.T, def check.Definition) ([]check.Finding, error) {
	t.Helper()
	if v, ok := def.Settings.(check.Validator); ok {
		if err := v.Validate(); err != nil {
			t.Fatalf("default settings invalid: %v", err)
		}
	}
	return def.Check.Run(context.Background())
}

func findingReasons(fs []check.Finding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.Reason)
	}
	return out
}

func TestKubeProxyRulesCheck(t *testing.T) {
	svcs, eps := loadAPI(t, "api-iptables.json")
	nat := string(readKP(t, "iptables-nft-nat.txt"))
	filter := string(readKP(t, "iptables-nft-filter.txt"))
	now := time.Date(2026, 11, 23, 16, 0, 0, 0, time.UTC)
	clk := clocktesting.NewFakeClock(now)
	broken := strings.Replace(nat, "-A KUBE-SVC-IFGUBRKS5UGRVAEJ -m comment --comment \"dp/web:http -> 10.244.0.3:8080\" -j KUBE-SEP-2XV3PIRSHTAXQ3O3\n", "", 1)
	deps := func(natText string, kp fakeKP) kubeproxy.KubeProxyDeps {
		return kubeproxy.KubeProxyDeps{Services: fakeLister{svcs: svcs, eps: eps}, IPTables: fakeSaver{"nft/nat": natText, "nft/filter": filter},
			NFT: fakeNFT{}, KubeProxy: kp, Clock: clk}
	}
	t.Run("healthy", func(t *testing.T) {
		f, err := runDef(t, KubeProxyRules(deps(nat, fakeKP{mode: "iptables", sync: settledSync(now.Add(-time.Minute))})))
		if err != nil || len(f) != 1 || f[0].Reason != "RulesMatchAPI" || f[0].Details["verified"] != "4" {
			t.Fatalf("%v %+v", err, f)
		}
	})
	t.Run("broken, kube-proxy settled", func(t *testing.T) {
		f, err := runDef(t, KubeProxyRules(deps(broken, fakeKP{mode: "iptables", sync: settledSync(now.Add(-time.Minute))})))
		if err != nil || len(f) != 2 || f[0].Reason != "EndpointMissing" {
			t.Fatalf("%v %+v", err, f)
		}
		// The summary the report's services section counts from.
		if s := f[1]; s.Reason != "ServicePortsVerified" || s.Severity != check.SeverityOK || s.Details["service_ports_broken"] != "1" ||
			s.Details["service_ports_verified"] != "3" || s.Details["mode"] != "iptables" {
			t.Errorf("summary %+v", s)
		}
		// What the report's services section makes of this run.
		sec := report.ServicesSection([]check.Result{{Check: "kube-proxy-rules", Status: check.StatusProblem, Findings: f}}, "kube-proxy-rules")
		if sec == nil || len(sec.Counts) != 1 || sec.Counts[0].Verified != 3 || sec.Counts[0].Broken != 1 || len(sec.Broken) != 1 {
			t.Fatalf("services section %+v", sec)
		}
		b := sec.Broken[0]
		if b.ServicePort != "dp/web:http" || b.Protocol != "TCP" || b.Mode != "iptables" || b.Reason != "EndpointMissing" ||
			b.Expected != "KUBE-SVC-IFGUBRKS5UGRVAEJ DNAT to 10.244.0.3:8080" || !strings.Contains(b.Actual, "has: 10.244.0.2:8080") ||
			b.Why == "" || b.Fix == "" {
			t.Errorf("broken port %+v", b)
		}
		if f[0].Object != (check.Object{Kind: check.KindService, Namespace: "dp", Name: "web"}) || !strings.Contains(f[0].Message, "dp/web:http") ||
			!strings.Contains(f[0].Details["expected"], "10.244.0.3:8080") {
			t.Errorf("finding %+v", f[0])
		}
	})
	t.Run("broken, kube-proxy syncing: counts after grace", func(t *testing.T) {
		syncing := kubeproxy.KubeProxySync{LastSync: map[string]time.Time{"IPv4": now.Add(-time.Minute)}, LastQueued: map[string]time.Time{"IPv4": now}}
		def := KubeProxyRules(deps(broken, fakeKP{mode: "iptables", sync: syncing}))
		f, _ := runDef(t, def)
		if len(f) != 1 || f[0].Reason != "RulesMatchAPI" || f[0].Details["pending"] != "1" {
			t.Fatalf("first run %+v", f)
		}
		clk.Step(31 * time.Second)
		defer clk.SetTime(now)
		f, _ = def.Check.Run(context.Background())
		if !slices.Contains(findingReasons(f), "EndpointMissing") {
			t.Fatalf("after grace %+v", f)
		}
	})
	t.Run("no cluster", func(t *testing.T) {
		d := deps(nat, fakeKP{mode: "iptables"})
		d.Services = fakeLister{err: errors.New("no cluster configured")}
		_, err := runDef(t, KubeProxyRules(d))
		if r, ok := check.IsNotApplicable(err); !ok || !strings.Contains(r, "no cluster") {
			t.Fatalf("%v", err)
		}
	})
	t.Run("no kube-proxy, no rules", func(t *testing.T) {
		d := deps("", fakeKP{err: errors.New("connection refused")})
		d.IPTables = fakeSaver{}
		_, err := runDef(t, KubeProxyRules(d))
		if r, ok := check.IsNotApplicable(err); !ok || !strings.Contains(r, "not running") {
			t.Fatalf("%v", err)
		}
	})
	t.Run("nftables", func(t *testing.T) {
		nsvcs, neps := loadAPI(t, "api-nftables.json")
		d := kubeproxy.KubeProxyDeps{Services: fakeLister{svcs: nsvcs, eps: neps}, NFT: fakeNFT{"ip": readKP(t, "nft-ip-kube-proxy.json")},
			KubeProxy: fakeKP{mode: "nftables", sync: settledSync(now.Add(-time.Minute))}, Clock: clk}
		f, err := runDef(t, KubeProxyRules(d))
		if err != nil || len(f) != 1 || f[0].Reason != "RulesMatchAPI" {
			t.Fatalf("%v %+v", err, f)
		}
	})
}

type fakeIPVS []dataplane.IPVSVirtual

func (f fakeIPVS) Services(context.Context) ([]dataplane.IPVSVirtual, error) { return f, nil }

func TestKubeProxyRulesIPVS(t *testing.T) {
	svcs, eps := loadAPI(t, "api-iptables.json")
	now := time.Date(2026, 11, 23, 16, 0, 0, 0, time.UTC)
	vs := func(ip string, proto uint16, port uint16, dests ...string) dataplane.IPVSVirtual {
		v := dataplane.IPVSVirtual{Service: ipvs.Service{Address: netip.MustParseAddr(ip).AsSlice(), Protocol: proto, Port: port, SchedName: "rr"}}
		for _, d := range dests {
			ap := netip.MustParseAddrPort(d)
			v.Destinations = append(v.Destinations, ipvs.Destination{Address: ap.Addr().AsSlice(), Port: ap.Port(), Weight: 1})
		}
		return v
	}
	// As kube-proxy's IPVS mode would program the captured Services.
	good := fakeIPVS{
		vs("10.96.77.115", 6, 80, "10.244.0.2:8080", "10.244.0.3:8080"),
		vs("10.96.77.115", 17, 53, "10.244.0.2:8053", "10.244.0.3:8053"),
		vs("10.96.4.72", 6, 8080, "10.244.0.2:8080", "10.244.0.3:8080"),
		vs("203.0.113.7", 6, 8080, "10.244.0.2:8080", "10.244.0.3:8080"),
		vs("10.96.0.1", 6, 443, "198.51.100.10:6443"),
	}
	d := kubeproxy.KubeProxyDeps{Services: fakeLister{svcs: svcs, eps: eps}, IPVS: good,
		KubeProxy: fakeKP{mode: "ipvs", sync: settledSync(now.Add(-time.Minute))}, Clock: clocktesting.NewFakeClock(now)}
	f, err := runDef(t, KubeProxyRules(d))
	if err != nil || len(f) != 1 || f[0].Reason != "RulesMatchAPI" || f[0].Details["verified"] != "4" {
		t.Fatalf("%v %+v", err, f)
	}
	bad := slices.Clone(good)
	bad[0] = vs("10.96.77.115", 6, 80, "10.244.0.2:8080", "10.244.0.9:8080")
	d.IPVS = bad
	f, _ = runDef(t, KubeProxyRules(d))
	if got := findingReasons(f); !slices.Contains(got, "EndpointMissing") || !slices.Contains(got, "StaleEndpoint") {
		t.Fatalf("%v", got)
	}
}

func TestKubeProxyHealthCheck(t *testing.T) {
	now := time.Date(2026, 11, 23, 16, 0, 0, 0, time.UTC)
	clk := clocktesting.NewFakeClock(now)
	stalled := kubeproxy.KubeProxySync{LastSync: map[string]time.Time{"IPv4": now.Add(-10 * time.Minute)}, LastQueued: map[string]time.Time{"IPv4": now.Add(-5 * time.Minute)}}
	cases := []struct {
		name string
		kp   fakeKP
		want string
	}{
		{"healthy", fakeKP{h: kubeproxy.KubeProxyHealthz{StatusCode: 200, Healthy: true}, sync: settledSync(now)}, "KubeProxyHealthy"},
		{"unhealthy", fakeKP{h: kubeproxy.KubeProxyHealthz{StatusCode: 503}, sync: settledSync(now)}, "KubeProxyUnhealthy"},
		{"stalled", fakeKP{h: kubeproxy.KubeProxyHealthz{StatusCode: 200, Healthy: true}, sync: stalled}, "KubeProxySyncStalled"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, err := runDef(t, KubeProxyHealth(kubeproxy.KubeProxyDeps{KubeProxy: c.kp, Clock: clk}))
			if err != nil || !slices.Contains(findingReasons(f), c.want) {
				t.Fatalf("%v %+v", err, f)
			}
		})
	}
	_, err := runDef(t, KubeProxyHealth(kubeproxy.KubeProxyDeps{KubeProxy: fakeKP{err: errors.New("refused")}, IPTables: fakeSaver{}, Clock: clk}))
	if _, ok := check.IsNotApplicable(err); !ok {
		t.Fatalf("no kube-proxy: %v", err)
	}
}

func TestParseKubeProxyMetrics(t *testing.T) {
	s, err := kubeproxy.ParseKubeProxyMetrics(bytes.NewReader(readKP(t, "kube-proxy-metrics-iptables.txt")))
	if err != nil {
		t.Fatal(err)
	}
	if s.LastSync["IPv4"].Unix() != 1795446713 || s.LastQueued["IPv4"].Unix() != 1795446712 || s.LastSync["IPv6"].IsZero() {
		t.Errorf("%+v", s)
	}
}

func TestIPTablesBackendsAndForward(t *testing.T) {
	filter := string(readKP(t, "iptables-nft-filter.txt"))
	nat := string(readKP(t, "iptables-nft-nat.txt"))
	node := &corev1.Node{Spec: corev1.NodeSpec{PodCIDRs: []string{"10.244.0.0/24"}}}
	d := kubeproxy.KubeProxyDeps{Services: fakeLister{node: node}, IPTables: fakeSaver{"nft/nat": nat, "nft/filter": filter}}
	f, err := runDef(t, IPTablesBackends(d))
	if err != nil || f[0].Reason != "SingleIPTablesBackend" {
		t.Fatalf("%v %+v", err, f)
	}
	d.IPTables = fakeSaver{"nft/nat": nat, "nft/filter": filter, "legacy/filter": "*filter\n:KUBE-KUBELET-CANARY - [0:0]\nCOMMIT\n"}
	if f, _ := runDef(t, IPTablesBackends(d)); f[0].Reason != "KubeChainsInBothBackends" {
		t.Fatalf("%+v", f)
	}
	d.IPTables = fakeSaver{"nft/filter": filter}
	if f, err := runDef(t, ForwardPolicy(d, PodRangeSources{Node: d.Services})); err != nil || f[0].Reason != "ForwardAccepts" {
		t.Fatalf("%v %+v", err, f)
	}
	d.IPTables = fakeSaver{"nft/filter": strings.Replace(filter, ":FORWARD ACCEPT", ":FORWARD DROP", 1)}
	if f, _ := runDef(t, ForwardPolicy(d, PodRangeSources{Node: d.Services})); !slices.Contains(findingReasons(f), "ForwardDropsPodTraffic") {
		t.Fatalf("%+v", f)
	}
	dropRule := strings.Replace(filter, "COMMIT", "-A FORWARD -d 10.244.0.0/24 -j DROP\nCOMMIT", 1)
	d.IPTables = fakeSaver{"nft/filter": dropRule}
	if f, _ := runDef(t, ForwardPolicy(d, PodRangeSources{Node: d.Services})); !slices.Contains(findingReasons(f), "PodTrafficDropped") {
		t.Fatalf("%+v", f)
	}
	accepting := strings.Replace(strings.Replace(filter, ":FORWARD ACCEPT", ":FORWARD DROP", 1), "COMMIT", "-A FORWARD -s 10.244.0.0/24 -j ACCEPT\nCOMMIT", 1)
	d.IPTables = fakeSaver{"nft/filter": accepting}
	if f, _ := runDef(t, ForwardPolicy(d, PodRangeSources{Node: d.Services})); f[0].Reason != "ForwardAccepts" {
		t.Fatalf("%+v", f)
	}
}

func TestConntrack(t *testing.T) {
	stat := "entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart\n" +
		"0000041a  00000000 00000000 00000000 00000030 00000000 00000000 00000000 00000000 00000002 00000001 00000000 00000000  00000000 00000000 00000000 00000000\n" +
		"0000041a  00000000 00000000 00000000 000000a6 00000000 00000000 00000000 00000000 00000003 00000000 00000000 00000000  00000000 00000000 00000000 00000000\n"
	fsys := fstest.MapFS{
		"proc/sys/net/netfilter/nf_conntrack_count": {Data: []byte("950\n")},
		"proc/sys/net/netfilter/nf_conntrack_max":   {Data: []byte("1000\n")},
		"proc/net/stat/nf_conntrack":                {Data: []byte(stat)},
	}
	def := Conntrack(fsys, nil)
	f, err := runDef(t, def)
	if err != nil || f[0].Reason != "ConntrackTableFull" || len(f) != 1 {
		t.Fatalf("%v %+v", err, f)
	}
	fsys["proc/net/stat/nf_conntrack"] = &fstest.MapFile{Data: []byte(strings.Replace(stat, "00000002", "00000009", 1))}
	f, _ = def.Check.Run(context.Background())
	if !slices.Contains(findingReasons(f), "ConntrackDropping") {
		t.Fatalf("%+v", f)
	}
	st, err := ParseConntrackStat([]byte(stat))
	if err != nil || st.InsertFailed != 5 || st.Drop != 1 || st.Entries != 0x41a {
		t.Fatalf("%v %+v", err, st)
	}
	if _, err := runDef(t, Conntrack(fstest.MapFS{}, nil)); err == nil {
		t.Fatal("no conntrack: want not applicable")
	} else if _, ok := check.IsNotApplicable(err); !ok {
		t.Fatal(err)
	}
}

func TestKubeProxyRulesMetrics(t *testing.T) {
	svcs, eps := loadAPI(t, "api-iptables.json")
	now := time.Date(2026, 11, 23, 16, 0, 0, 0, time.UTC)
	def := KubeProxyRules(kubeproxy.KubeProxyDeps{Services: fakeLister{svcs: svcs, eps: eps},
		IPTables:  fakeSaver{"nft/nat": string(readKP(t, "iptables-nft-nat.txt")), "nft/filter": string(readKP(t, "iptables-nft-filter.txt"))},
		KubeProxy: fakeKP{mode: "iptables", sync: settledSync(now.Add(-time.Minute))}, Clock: clocktesting.NewFakeClock(now)})
	if _, err := runDef(t, def); err != nil {
		t.Fatal(err)
	}
	c, ok := def.Check.(prometheus.Collector)
	if !ok {
		t.Fatal("kube-proxy-rules is not a prometheus.Collector")
	}
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", err, problems)
	}
	want := `
# HELP node_doctor_kubeproxy_service_ports Service ports (per IP family) in the last verification of kube-proxy's rules, by mode and state (verified, broken, pending, no_endpoints, unverifiable).
# TYPE node_doctor_kubeproxy_service_ports gauge
node_doctor_kubeproxy_service_ports{mode="iptables",state="broken"} 0
node_doctor_kubeproxy_service_ports{mode="iptables",state="no_endpoints"} 1
node_doctor_kubeproxy_service_ports{mode="iptables",state="pending"} 0
node_doctor_kubeproxy_service_ports{mode="iptables",state="unverifiable"} 0
node_doctor_kubeproxy_service_ports{mode="iptables",state="verified"} 4
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "node_doctor_kubeproxy_service_ports"); err != nil {
		t.Fatal(err)
	}
}

// editNFT lists a captured table and edits it, as a reader that met
// something it could not decode would return it.
type editNFT struct {
	fakeNFT
	edit func(*dataplane.NFTTable)
}

func (e editNFT) ListTable(ctx context.Context, family, table string, into *dataplane.NFTTable) (bool, error) {
	ok, err := e.fakeNFT.ListTable(ctx, family, table, into)
	if ok && err == nil {
		e.edit(into)
	}
	return ok, err
}

// TestKubeProxyRulesUnknownRule: the check reports an undecoded rule as a
// warning with its raw form and the port as unverifiable, never as broken.
func TestKubeProxyRulesUnknownRule(t *testing.T) {
	now := time.Date(2026, 11, 23, 16, 0, 0, 0, time.UTC)
	svcs, eps := loadAPI(t, "api-nftables.json")
	chain := "service-G72YLFXC-dp/web/tcp/http"
	nft := editNFT{fakeNFT{"ip": readKP(t, "nft-ip-kube-proxy.json")}, func(t *dataplane.NFTTable) {
		t.Chains[chain].DNAT = t.Chains[chain].DNAT[:1]
		t.Unknown = []dataplane.NFTUnknown{{Where: "chain " + chain, Why: `expression "frobnicate"`, Raw: "0c000100"}}
	}}
	def := KubeProxyRules(kubeproxy.KubeProxyDeps{Services: fakeLister{svcs: svcs, eps: eps}, NFT: nft,
		KubeProxy: fakeKP{mode: "nftables", sync: settledSync(now.Add(-time.Minute))}, Clock: clocktesting.NewFakeClock(now)})
	f, err := runDef(t, def)
	if err != nil || !slices.Equal(findingReasons(f), []string{"RulesMatchAPI", "RulesNotUnderstood"}) {
		t.Fatalf("%v %v", err, findingReasons(f))
	}
	if w := f[1]; w.Severity != check.SeverityWarning || !strings.Contains(w.Details["example"], "0c000100") || w.Details["service_ports_unverifiable"] != "1" {
		t.Fatalf("%+v", w)
	}
	want := `
# HELP node_doctor_kubeproxy_unknown_rules kube-proxy rules and map elements the netlink reader could not decode in the last verification; the service ports depending on them count as unverifiable.
# TYPE node_doctor_kubeproxy_unknown_rules gauge
node_doctor_kubeproxy_unknown_rules 1
`
	if err := testutil.CollectAndCompare(def.Check.(prometheus.Collector), strings.NewReader(want), "node_doctor_kubeproxy_unknown_rules"); err != nil {
		t.Fatal(err)
	}
}
