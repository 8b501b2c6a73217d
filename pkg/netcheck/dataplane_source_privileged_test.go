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
		IPTables: dataplane.NetlinkIPTablesSaver{NS: ns.Handle},
		NFT:      dataplane.NetlinkNFT{NS: ns.Handle},
	}
	src := kubeproxy.NewSource(readers, dataplane.SourceOptions{Metrics: m})
	d := kubeproxy.KubeProxyDeps{Services: fakeLister{svcs: svcs, eps: eps, node: nodeWithPodCIDR("10.244.0.0/24")}, Tables: src,
		KubeProxy: fakeKP{mode: "iptables", sync: settledSync(now.Add(-time.Minute))}, Clock: clocktesting.NewFakeClock(now)}
	kl := fakeKubeletDNS{found: true, c: KubeletDNSConfig{ClusterDNS: []string{"10.96.77.115"}, ClusterDNSFrom: "the kubelet's --cluster-dns flag"}}
	defs := networkChecks(d, kl)
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
				t.Errorf("%s: %v", def.Name, errs[i])
			}
			t.Logf("%s: %v", def.Name, reasons[i])
		}
		if def.Name == "kube-proxy-rules" && !slices.Contains(reasons[i], "RulesMatchAPI") {
			t.Errorf("kube-proxy-rules on the loaded rules: %v", reasons[i])
		}
	}
	got := readsMetric(t, m)
	for _, k := range []string{"nft/ip/nat", "nft/ip/filter", "nft/ip/mangle", "nft/ip6/nat", "nft/ip6/filter", "legacy/ip/nat", "legacy/ip/filter", "legacy/ip/mangle"} {
		if got[k] != 1 {
			t.Errorf("%s read %d times, want 1", k, got[k])
		}
	}
	for k, n := range got {
		if n != 1 {
			t.Errorf("%s read %d times in one round", k, n)
		}
	}
	t.Logf("reads: %v", got)
}
