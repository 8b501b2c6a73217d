package netcheck

import (
	"context"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/node-doctor/node-doctor/internal/testnetns"
	"github.com/node-doctor/node-doctor/pkg/dataplane"
	"github.com/node-doctor/node-doctor/pkg/kubeproxy"
)

// TestPrivilegedOneTableReadPerRound loads real kube-proxy v1.37.2 rules into
// a throwaway namespace's iptables-nft, runs every network check once side
// by side on one source with the netlink readers the agent uses, and reads
// the metric: one read per table. Root only (it creates the namespace).
func TestPrivilegedOneTableReadPerRound(t *testing.T) {
	ns := testnetns.New(t)
	if _, err := exec.LookPath("iptables-nft-restore"); err != nil {
		t.Skip("no iptables-nft-restore to load the rules with")
	}
	for _, f := range []string{"iptables-nft-nat.txt", "iptables-nft-filter.txt"} {
		var keep []string
		for _, l := range strings.Split(string(readKP(t, f)), "\n") {
			if !strings.Contains(l, "-m nfacct") { // needs an accounting object this namespace lacks
				keep = append(keep, l)
			}
		}
		cmd := exec.Command("ip", "netns", "exec", ns.Name, "iptables-nft-restore", "--noflush")
		cmd.Stdin = strings.NewReader(strings.Join(keep, "\n"))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("iptables-nft-restore %s: %v: %s", f, err, out)
		}
	}
	svcs, eps := loadAPI(t, "api-iptables.json")
	now := time.Now()
	m := dataplane.NewMetrics()
	readers := dataplane.Readers{
		// No legacy reader: iptables-legacy-save would have the kernel load
		// the legacy table modules, host-wide.
		IPTables:   dataplane.NetlinkIPTablesSaver{NS: ns.Handle},
		NFT:        dataplane.NetlinkNFT{NS: ns.Handle},
		Generation: dataplane.NFTGeneration{NS: ns.Handle},
	}
	clk := clocktesting.NewFakeClock(now)
	src := kubeproxy.NewSource(readers, dataplane.SourceOptions{Metrics: m, Clock: clk})
	d := kubeproxy.KubeProxyDeps{Services: fakeLister{svcs: svcs, eps: eps, node: nodeWithPodCIDR("10.244.0.0/24")}, Tables: src,
		KubeProxy: fakeKP{mode: "iptables", sync: settledSync(now.Add(-time.Minute))}, Clock: clk}
	kl := fakeKubeletDNS{found: true, c: KubeletDNSConfig{ClusterDNS: []string{"10.96.77.115"}, ClusterDNSFrom: "the kubelet's --cluster-dns flag"}}
	defs := networkChecks(d, kl)
	round := func(name string) {
		reasons := make([][]string, len(defs))
		errs := make([]error, len(defs))
		var wg sync.WaitGroup
		for i := range defs {
			wg.Go(func() {
				f, err := defs[i].Check.Run(context.Background())
				reasons[i], errs[i] = findingReasons(f), err
			})
		}
		wg.Wait()
		for i, def := range defs {
			switch def.Name {
			case "kube-proxy-rules", "iptables-backends", "forward-policy", "cluster-dns":
				if errs[i] != nil {
					t.Errorf("%s: %s: %v", name, def.Name, errs[i])
				}
				t.Logf("%s: %s: %v", name, def.Name, reasons[i])
			}
			if def.Name == "kube-proxy-rules" && !slices.Contains(reasons[i], "RulesMatchAPI") {
				t.Errorf("%s: kube-proxy-rules on the loaded rules: %v", name, reasons[i])
			}
		}
	}
	nftTables := []string{"nft/ip/nat", "nft/ip/filter", "nft/ip/mangle", "nft/ip6/nat", "nft/ip6/filter"}
	want := func(name string, reads, reuses int) {
		got, kept := readsMetric(t, m), tableMetric(t, m, "node_doctor_dataplane_table_reuses_total")
		for _, k := range nftTables {
			if got[k] != reads || kept[k] != reuses {
				t.Errorf("%s: %s read %d times and reused %d, want %d and %d", name, k, got[k], kept[k], reads, reuses)
			}
		}
		for k, n := range got {
			switch {
			case slices.Contains(nftTables, k):
			case strings.HasPrefix(k, "legacy/"):
				// Not in nf_tables: read every round.
				if n != reads+reuses {
					t.Errorf("%s: %s read %d times in %d rounds", name, k, n, reads+reuses)
				}
			default:
				t.Errorf("%s: %s read %d times", name, k, n)
			}
		}
		t.Logf("%s: reads %v, reuses %v", name, got, kept)
	}
	round("first round")
	want("first round", 1, 0)
	// Nothing changed: the next round reuses every nf_tables read, with the
	// same result.
	clk.Step(dataplane.DefaultMaxAge)
	round("unchanged")
	want("unchanged", 1, 1)
	// Any committed change (here a table of its own) reads them again.
	if out, err := exec.Command("ip", "netns", "exec", ns.Name, "nft", "add", "table", "ip", "nd-other").CombinedOutput(); err != nil {
		t.Fatalf("nft add table: %v: %s", err, out)
	}
	clk.Step(dataplane.DefaultMaxAge)
	round("changed")
	want("changed", 2, 1)
}
