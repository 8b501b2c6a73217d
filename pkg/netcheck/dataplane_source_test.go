package netcheck

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/node-doctor/node-doctor/pkg/check"
	"github.com/node-doctor/node-doctor/pkg/dataplane"
	"github.com/node-doctor/node-doctor/pkg/kubeproxy"
)

// countingReaders count every table read by backend/family/table; each
// read takes a little while, so checks running side by side overlap.
type countingReaders struct {
	ipt dataplane.IPTablesSaver
	nft dataplane.NFTLister

	mu sync.Mutex
	n  map[string]int
}

func (c *countingReaders) count(backend, family, table string) {
	c.mu.Lock()
	c.n[backend+"/"+family+"/"+table]++
	c.mu.Unlock()
	time.Sleep(10 * time.Millisecond)
}

func (c *countingReaders) Save(ctx context.Context, backend string, v6 bool, table string, into *dataplane.IPTables) error {
	c.count(backend, ipFamily(v6), table)
	return c.ipt.Save(ctx, backend, v6, table, into)
}

func (c *countingReaders) ListTable(ctx context.Context, family, table string, into *dataplane.NFTTable) (bool, error) {
	c.count("nftables", family, table)
	return c.nft.ListTable(ctx, family, table, into)
}

// countingIPVS counts IPVS reads; kube-ipvs0 and the ipsets come with it.
type countingIPVS struct {
	*fakeIPVSNode
	c *countingReaders
}

func (i countingIPVS) Services(ctx context.Context) ([]dataplane.IPVSVirtual, error) {
	i.c.count("ipvs", "all", "ipvs")
	return i.fakeIPVSNode.Services(ctx)
}

func ipFamily(v6 bool) string {
	if v6 {
		return "ip6"
	}
	return "ip"
}

// networkChecks are all the checks of area network, built as pkg/checks
// builds them, on d and the shared source in it.
func networkChecks(d kubeproxy.KubeProxyDeps, kl KubeletDNS) []check.Definition {
	fsys := fstest.MapFS{}
	bl := fakeBridges{}
	return []check.Definition{
		IPForward(fsys, bl), BridgeNetfilter(fsys, bl), Hairpin(bl),
		KubeProxyRules(d), KubeProxyHealth(d), IPTablesBackends(d),
		ForwardPolicy(d, PodRangeSources{Node: d.Services}),
		PodCIDRRoute(d.Services, fakeRoutes{}),
		ClusterDNS(ClusterDNSDeps{Kubelet: kl, Services: d.Services, FS: fsys, Addrs: fakeAddrs{}, Rules: &d}),
		Conntrack(fsys, &fakeCtnetlink{err: errors.New("no ctnetlink")}),
	}
}

// TestOneTableReadPerRound runs every network check once, side by side as
// the runner does, on one shared source: each table is read once, and the
// metric says so. With kube-proxy answering (iptables mode) and with it
// down (the checks then look at both nftables and iptables).
func TestOneTableReadPerRound(t *testing.T) {
	svcs, eps := loadAPI(t, "api-iptables.json")
	nat := string(readKP(t, "iptables-nft-nat.txt"))
	filter := string(readKP(t, "iptables-nft-filter.txt"))
	now := time.Date(2026, 11, 23, 16, 0, 0, 0, time.UTC)
	kl := fakeKubeletDNS{found: true, c: KubeletDNSConfig{ClusterDNS: []string{"10.96.77.115"}, ClusterDNSFrom: "the kubelet's --cluster-dns flag"}}
	node := nodeWithPodCIDR("10.244.0.0/24")
	for _, tc := range []struct {
		name string
		kp   fakeKP
		want []string
	}{
		{"kube-proxy answers", fakeKP{mode: "iptables", sync: settledSync(now.Add(-time.Minute))}, []string{
			"legacy/ip/filter", "legacy/ip/mangle", "legacy/ip/nat",
			"nft/ip/filter", "nft/ip/mangle", "nft/ip/nat", "nft/ip6/filter", "nft/ip6/nat"}},
		{"kube-proxy down", fakeKP{err: errors.New("connection refused")}, []string{
			"legacy/ip/filter", "legacy/ip/mangle", "legacy/ip/nat",
			"nft/ip/filter", "nft/ip/mangle", "nft/ip/nat", "nft/ip6/filter", "nft/ip6/nat",
			"nftables/ip/kube-proxy", "nftables/ip6/kube-proxy"}},
		{"IPVS mode", fakeKP{mode: "ipvs", sync: settledSync(now.Add(-time.Minute))}, []string{
			"ipvs/all/ipvs", "legacy/ip/filter", "legacy/ip/mangle", "legacy/ip/nat",
			"nft/ip/filter", "nft/ip/mangle", "nft/ip/nat"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &countingReaders{ipt: fakeSaver{"nft/nat": nat, "nft/filter": filter}, nft: fakeNFT{}, n: map[string]int{}}
			m := dataplane.NewMetrics()
			clk := clocktesting.NewFakeClock(now)
			src := kubeproxy.NewSource(dataplane.Readers{IPTables: r, NFT: r, IPVS: countingIPVS{kubeProxyIPVSState(), r}}, dataplane.SourceOptions{Clock: clk, Metrics: m})
			d := kubeproxy.KubeProxyDeps{Services: fakeLister{svcs: svcs, eps: eps, node: node}, Tables: src, KubeProxy: tc.kp, Clock: clk}
			defs := networkChecks(d, kl)
			results := make([]error, len(defs))
			findings := make([][]check.Finding, len(defs))
			var wg sync.WaitGroup
			for i := range defs {
				wg.Go(func() { findings[i], results[i] = defs[i].Check.Run(context.Background()) })
			}
			wg.Wait()
			for i, err := range results {
				if name := defs[i].Name; slices.Contains([]string{"kube-proxy-rules", "iptables-backends", "forward-policy", "cluster-dns"}, name) && err != nil {
					t.Errorf("%s: %v", name, err)
				}
				// cluster-dns verified the DNS Service's rules from the same reads.
				if defs[i].Name == "cluster-dns" && (len(findings[i]) != 1 || !strings.Contains(findings[i][0].Message, "rules on this node verified")) {
					t.Errorf("cluster-dns: %+v", findings[i])
				}
			}
			if got := slices.Sorted(maps.Keys(r.n)); !slices.Equal(got, tc.want) {
				t.Errorf("tables read %v, want %v", got, tc.want)
			}
			for k, n := range r.n {
				if n != 1 {
					t.Errorf("%s read %d times in one round", k, n)
				}
			}
			metric := readsMetric(t, m)
			if !maps.Equal(metric, r.n) {
				t.Errorf("node_doctor_dataplane_table_reads_total %v, reads %v", metric, r.n)
			}
			// The next round, MaxAge later, reads each table once more.
			clk.Step(dataplane.DefaultMaxAge)
			for i := range defs {
				wg.Go(func() { _, _ = defs[i].Check.Run(context.Background()) })
			}
			wg.Wait()
			for k, n := range r.n {
				if n != 2 {
					t.Errorf("second round: %s read %d times in all", k, n)
				}
			}
		})
	}
}

func readsMetric(t *testing.T, m *dataplane.Metrics) map[string]int {
	t.Helper()
	return tableMetric(t, m, "node_doctor_dataplane_table_reads_total")
}

// tableMetric is one of m's counters by backend/family/table.
func tableMetric(t *testing.T, m *dataplane.Metrics, name string) map[string]int {
	t.Helper()
	ch := make(chan prometheus.Metric, 64)
	m.Collect(ch)
	close(ch)
	out := map[string]int{}
	for pm := range ch {
		if !strings.Contains(pm.Desc().String(), `fqName: "`+name+`"`) {
			continue
		}
		var d dto.Metric
		if err := pm.Write(&d); err != nil {
			t.Fatal(err)
		}
		l := map[string]string{}
		for _, p := range d.GetLabel() {
			l[p.GetName()] = p.GetValue()
		}
		out[fmt.Sprintf("%s/%s/%s", l["backend"], l["family"], l["table"])] = int(d.GetCounter().GetValue())
	}
	return out
}

// A failed read is the error of every check that needed the table, in the
// reader's words, and is not retried within the round.
func TestTableReadErrorSharedInRound(t *testing.T) {
	boom := errors.New("nf_tables: ruleset changed during the read (generation 7 to 8; read again next run)")
	r := &countingReaders{ipt: failingSaver{err: boom}, nft: fakeNFT{}, n: map[string]int{}}
	src := kubeproxy.NewSource(dataplane.Readers{IPTables: r, NFT: r}, dataplane.SourceOptions{})
	svcs, eps := loadAPI(t, "api-iptables.json")
	d := kubeproxy.KubeProxyDeps{Services: fakeLister{svcs: svcs, eps: eps, node: nodeWithPodCIDR("10.244.0.0/24")}, Tables: src, KubeProxy: fakeKP{mode: "iptables"}}
	for _, def := range []check.Definition{KubeProxyRules(d), IPTablesBackends(d), ForwardPolicy(d, PodRangeSources{Node: d.Services})} {
		if _, err := def.Check.Run(context.Background()); !errors.Is(err, boom) {
			t.Errorf("%s: %v, want the read's error", def.Name, err)
		}
	}
	if n := r.n["nft/ip/nat"]; n != 1 {
		t.Errorf("nat read %d times", n)
	}
}

func nodeWithPodCIDR(cidr string) *corev1.Node {
	return &corev1.Node{Spec: corev1.NodeSpec{PodCIDRs: []string{cidr}}}
}

type failingSaver struct{ err error }

func (f failingSaver) Save(context.Context, string, bool, string, *dataplane.IPTables) error {
	return f.err
}
