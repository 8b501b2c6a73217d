//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/node-doctor/node-doctor/pkg/dataplane"
	"github.com/node-doctor/node-doctor/pkg/kubeproxy"
	ndreport "github.com/node-doctor/node-doctor/pkg/report"
	"github.com/node-doctor/node-doctor/test/harness"
)

// TestDataplane verifies kube-proxy's real rules with node-doctor, then
// breaks them for real on the harness node (only the nat/filter state
// kube-proxy and the FORWARD chain own; never INPUT/OUTPUT, loopback or
// routes), asserts each finding, restores and asserts it clears.
func TestDataplane(t *testing.T) {
	harness.RequireRoot(t)
	agent := buildAgent(t)
	for _, mode := range []string{"iptables", "nftables"} {
		t.Run(mode, func(t *testing.T) { runDataplane(t, mode, agent) })
	}
}

var dataplaneChecks = "kube-proxy-rules,kube-proxy-health,iptables-backends,forward-policy,conntrack"

type dpFinding struct {
	Severity, Reason, Message string
	Details                   map[string]string
}

type dpReport struct {
	Results []struct {
		Check, Status string
		Error         string `json:"error"`
		NotApplicable string `json:"not_applicable_reason"`
		Findings      []dpFinding
	}
	Services *ndreport.Services
}

// dpAgent runs `node-doctor check -o json` against the node.
type dpAgent struct {
	bin, kubeconfig, node, config string
	// only lists the checks to run (default: dataplaneChecks).
	only string
	// args are more flags (--runtime-endpoint).
	args []string
}

// output runs `node-doctor check -o format` and returns its stdout.
func (a dpAgent) output(ctx context.Context, t *testing.T, format string) []byte {
	t.Helper()
	only := a.only
	if only == "" {
		only = dataplaneChecks
	}
	args := append([]string{"check", "-o", format, "--color", "never", "--kubeconfig", a.kubeconfig, "--node-name", a.node,
		"--config", a.config, "--only", only}, a.args...)
	cmd := exec.CommandContext(ctx, a.bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 1) {
		t.Fatalf("node-doctor check: %v\n%s", err, stderr.String())
	}
	return stdout.Bytes()
}

// servicesSection asserts the report's services section (JSON and table)
// names the broken service port with the reason and the expected rule.
func (a dpAgent) servicesSection(ctx context.Context, t *testing.T, svc kubeproxy.ServicePortName, reason, expected string) {
	t.Helper()
	rep := a.run(ctx, t)
	if rep.Services == nil || len(rep.Services.Counts) == 0 {
		t.Fatalf("no services section with counts: %+v", rep.Services)
	}
	found := false
	for _, b := range rep.Services.Broken {
		if b.ServicePort == svc.String() && b.Reason == reason && strings.Contains(b.Expected, expected) && b.Fix != "" {
			found = true
		}
	}
	if !found || rep.Services.Counts[0].Broken == 0 {
		t.Errorf("services section does not name %s %s (%s): %+v", svc, reason, expected, rep.Services)
	}
	table := string(a.output(ctx, t, "table"))
	i := strings.Index(table, "\nSERVICES\n")
	if i < 0 || !strings.Contains(table[i:], svc.String()) || !strings.Contains(table[i:], reason) || !strings.Contains(table[i:], "expected: ") {
		t.Errorf("table's services section does not name %s %s:\n%s", svc, reason, table)
	}
	t.Logf("services section:\n%s", table[max(i, 0):])
}

func (a dpAgent) run(ctx context.Context, t *testing.T) dpReport {
	t.Helper()
	out := a.output(ctx, t, "json")
	var rep dpReport
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("parse report: %v\n%s", err, out)
	}
	for _, r := range rep.Results {
		if r.Status == "error" {
			t.Errorf("check %s could not run: %s", r.Check, r.Error)
		}
	}
	return rep
}

// waitFor runs the agent until check has a finding with reason (and, when
// want is false, until it has none). It returns the matching finding.
func (a dpAgent) waitFor(ctx context.Context, t *testing.T, chk, reason string, want bool) dpFinding {
	t.Helper()
	var last dpReport
	var got dpFinding
	err := wait.PollUntilContextTimeout(ctx, time.Second, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		last = a.run(ctx, t)
		found := false
		for _, r := range last.Results {
			if r.Check != chk {
				continue
			}
			for _, f := range r.Findings {
				if f.Reason == reason {
					found, got = true, f
				}
			}
		}
		return found == want, nil
	})
	if err != nil {
		b, _ := json.MarshalIndent(last, "", "  ")
		t.Fatalf("%s: want reason %s present=%v; last report:\n%s", chk, reason, want, b)
	}
	if want {
		t.Logf("%s %s: %s", chk, reason, got.Message)
	}
	return got
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func runStdin(t *testing.T, stdin, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func runDataplane(t *testing.T, mode, bin string) {
	c := harness.StartT(t, harness.Options{ProxyMode: mode})
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()

	cfg := filepath.Join(t.TempDir(), "node-doctor.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("checks:\n  forward-policy:\n    podCIDRs: [%q]\n    serviceCIDRs: [%q]\n", c.PodCIDR, c.ServiceCIDR)), 0o644); err != nil {
		t.Fatal(err)
	}
	a := dpAgent{bin: bin, kubeconfig: c.Kubeconfig, node: c.NodeName, config: cfg}

	ns, err := c.CreateNamespace(ctx, "dataplane")
	if err != nil {
		t.Fatal(err)
	}
	web, err := c.CreateServiceWithEndpoints(ctx, ns, "web", 2)
	if err != nil {
		t.Fatal(err)
	}
	clusterIP := web.Service.Spec.ClusterIP
	podIPs := []string{web.Pods[0].Status.PodIP, web.Pods[1].Status.PodIP}
	if err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		ok, _, err := c.ServiceProgrammed(ctx, ns, "web", "http", clusterIP, podIPs)
		return ok && err == nil, nil
	}); err != nil {
		t.Fatalf("kube-proxy did not program %s/web", ns)
	}
	svc := kubeproxy.ServicePortName{Namespace: ns, Name: "web", Port: "http", Protocol: "tcp"}

	// Healthy: everything verifies clean.
	ok := a.waitFor(ctx, t, "kube-proxy-rules", "RulesMatchAPI", true)
	if ok.Details["mode"] != mode {
		t.Errorf("mode %q, want %q", ok.Details["mode"], mode)
	}
	rep := a.run(ctx, t)
	for _, r := range rep.Results {
		if r.Status == "problem" {
			t.Errorf("healthy node: %s reports %+v", r.Check, r.Findings)
		}
		t.Logf("healthy: %s %s %s", r.Check, r.Status, r.NotApplicable)
	}
	if rep.Services == nil || len(rep.Services.Counts) != 1 || rep.Services.Counts[0].Mode != mode || rep.Services.Counts[0].Verified == 0 || len(rep.Services.Broken) != 0 {
		t.Errorf("healthy node: services section %+v", rep.Services)
	}
	a.waitFor(ctx, t, "kube-proxy-health", "KubeProxyHealthy", true)
	a.explainHealthy(ctx, t, ns+"/web:http", mode, podIPs)

	if mode == "iptables" {
		readersAgree(ctx, t)
		iptablesBreakage(ctx, t, a, svc, podIPs)
	} else {
		nftablesBreakage(ctx, t, a, svc, clusterIP)
	}
	filterBreakage(ctx, t, a, c.PodCIDR)
}

// readersAgree reads the node's iptables-nft nat and filter tables (both
// families) with the netlink reader and with iptables-nft-save and requires
// the same chains, policies and rule lines, none undecoded.
func readersAgree(ctx context.Context, t *testing.T) {
	t.Helper()
	type dump struct {
		chains []string
		rules  map[string][]string
	}
	read := func(s dataplane.IPTablesSaver, v6 bool, table string) (dump, int) {
		d := dump{rules: map[string][]string{}}
		undecoded := 0
		into := &dataplane.IPTables{Tables: map[string]*dataplane.IPTTable{}, Rules: func(_, chain string, r dataplane.IPTRule) {
			d.rules[chain] = append(d.rules[chain], r.Line)
			if r.Undecoded != "" {
				undecoded++
				t.Errorf("undecoded rule on the real node: %s (%s)", r.Line, r.Undecoded)
			}
		}}
		if err := s.Save(ctx, dataplane.BackendNFT, v6, table, into); err != nil {
			t.Fatalf("%T %s: %v", s, table, err)
		}
		if tb := into.Table(table); tb != nil {
			for _, c := range tb.Order {
				d.chains = append(d.chains, c+" "+tb.Chains[c].Policy)
			}
		}
		return d, undecoded
	}
	for _, v6 := range []bool{false, true} {
		for _, table := range []string{"nat", "filter"} {
			e, _ := read(dataplane.ExecIPTablesSaver{}, v6, table)
			n, _ := read(dataplane.NetlinkIPTablesSaver{NS: -1}, v6, table)
			if fmt.Sprint(e.chains) != fmt.Sprint(n.chains) {
				t.Errorf("%s v6=%v chains: exec %v, netlink %v", table, v6, e.chains, n.chains)
			}
			lines := 0
			for c, l := range e.rules {
				lines += len(l)
				if fmt.Sprint(l) != fmt.Sprint(n.rules[c]) {
					t.Errorf("%s v6=%v chain %s:\n exec    %q\n netlink %q", table, v6, c, l, n.rules[c])
				}
			}
			for c := range n.rules {
				if _, ok := e.rules[c]; !ok {
					t.Errorf("%s v6=%v chain %s only read by netlink: %q", table, v6, c, n.rules[c])
				}
			}
			t.Logf("readers agree on %s v6=%v: %d chains, %d rules", table, v6, len(e.chains), lines)
		}
	}
}

// natSnapshot saves the nat table so every breakage is undone exactly,
// even when the test fails half-way.
func natSnapshot(t *testing.T) func() {
	snap := run(t, "iptables-nft-save", "-t", "nat")
	return func() { runStdin(t, snap, "iptables-nft-restore", "-T", "nat") }
}

func iptablesBreakage(ctx context.Context, t *testing.T, a dpAgent, svc kubeproxy.ServicePortName, podIPs []string) {
	svcChain := kubeproxy.IPTablesChainsFor(svc).SVC
	sep := kubeproxy.IPTablesEndpointChain(svc, podIPs[1]+":8080")

	t.Run("KUBE-SEP jump deleted", func(t *testing.T) {
		restore := natSnapshot(t)
		t.Cleanup(restore)
		// The rule in the service chain that jumps to the second endpoint.
		var line string
		for _, l := range strings.Split(run(t, "iptables-nft-save", "-t", "nat"), "\n") {
			if strings.HasPrefix(l, "-A "+svcChain+" ") && strings.HasSuffix(l, "-j "+sep) {
				line = l
			}
		}
		if line == "" {
			t.Fatalf("no jump to %s in %s", sep, svcChain)
		}
		run(t, "sh", "-c", "iptables-nft -t nat -D "+strings.TrimPrefix(line, "-A "))
		f := a.waitFor(ctx, t, "kube-proxy-rules", "EndpointMissing", true)
		readersAgree(ctx, t)
		if !strings.Contains(f.Message, svc.String()) || !strings.Contains(f.Details["expected"], podIPs[1]+":8080") {
			t.Errorf("finding does not name %s and %s: %+v", svc, podIPs[1], f)
		}
		a.servicesSection(ctx, t, svc, "EndpointMissing", svcChain+" DNAT to "+podIPs[1]+":8080")
		a.explainBroken(ctx, t, svc.Namespace+"/web:http", "EndpointMissing", kubeproxy.HopMissing, podIPs[1]+":8080")
		restore()
		a.waitFor(ctx, t, "kube-proxy-rules", "EndpointMissing", false)
	})
	t.Run("stale DNAT", func(t *testing.T) {
		restore := natSnapshot(t)
		t.Cleanup(restore)
		stale := "KUBE-SEP-NDSTALE000000000"
		run(t, "iptables-nft", "-t", "nat", "-N", stale)
		run(t, "iptables-nft", "-t", "nat", "-A", stale, "-p", "tcp", "-m", "comment", "--comment", svc.String(), "-j", "DNAT", "--to-destination", "10.244.0.250:8080")
		run(t, "iptables-nft", "-t", "nat", "-I", svcChain, "2", "-j", stale)
		f := a.waitFor(ctx, t, "kube-proxy-rules", "StaleEndpoint", true)
		if !strings.Contains(f.Details["actual"], "10.244.0.250:8080") {
			t.Errorf("stale endpoint not named: %+v", f)
		}
		a.waitFor(ctx, t, "kube-proxy-rules", "StaleServiceChain", true)
		a.explainBroken(ctx, t, svc.Namespace+"/web", "StaleEndpoint", kubeproxy.HopStale, "10.244.0.250:8080")
		restore()
		a.waitFor(ctx, t, "kube-proxy-rules", "StaleEndpoint", false)
	})
	t.Run("service chain flushed", func(t *testing.T) {
		restore := natSnapshot(t)
		t.Cleanup(restore)
		run(t, "iptables-nft", "-t", "nat", "-F", svcChain)
		a.waitFor(ctx, t, "kube-proxy-rules", "EndpointMissing", true)
		restore()
		a.waitFor(ctx, t, "kube-proxy-rules", "RulesMatchAPI", true)
	})
}

// nftSnapshot saves kube-proxy's table; restoring replaces it in one
// transaction.
func nftSnapshot(t *testing.T) func() {
	snap := run(t, "nft", "list", "table", "ip", "kube-proxy")
	return func() { runStdin(t, "delete table ip kube-proxy\n"+snap, "nft", "-f", "-") }
}

// nftReadersAgree reads the real kube-proxy tables with nft -j and over
// netlink and asserts the same table (kube-proxy may rewrite it between the
// two reads, so a few tries).
func nftReadersAgree(ctx context.Context, t *testing.T, state string) {
	t.Helper()
	norm := func(tb *dataplane.NFTTable) *dataplane.NFTTable {
		for _, c := range tb.Chains {
			slices.Sort(c.DNAT)
		}
		for _, m := range tb.Maps {
			slices.SortFunc(m.Elements, func(a, b dataplane.NFTElement) int {
				return strings.Compare(strings.Join(a.Key, " "), strings.Join(b.Key, " "))
			})
		}
		for _, st := range tb.Sets {
			slices.SortFunc(st.Elements, func(a, b dataplane.NFTElement) int {
				return strings.Compare(strings.Join(a.Key, " "), strings.Join(b.Key, " "))
			})
		}
		return tb
	}
	for _, fam := range []string{"ip", "ip6"} {
		var e, n *dataplane.NFTTable
		for try := 0; try < 5; try++ {
			e, n = dataplane.NewNFTTable(), dataplane.NewNFTTable()
			eok, err := dataplane.ExecNFT{}.ListTable(ctx, fam, "kube-proxy", e)
			if err != nil {
				t.Fatalf("%s: nft -j: %v", state, err)
			}
			nok, err := dataplane.NetlinkNFT{NS: -1}.ListTable(ctx, fam, "kube-proxy", n)
			if err != nil {
				t.Fatalf("%s: netlink: %v", state, err)
			}
			if eok == nok && reflect.DeepEqual(norm(e), norm(n)) {
				break
			}
			time.Sleep(time.Second)
		}
		if !reflect.DeepEqual(e, n) {
			t.Errorf("%s: table %s kube-proxy: nft -j and netlink differ:\nnft -j:  %+v\nnetlink: %+v", state, fam, e, n)
		} else {
			t.Logf("%s: table %s kube-proxy: nft -j and netlink agree (%d chains, %d maps)", state, fam, len(n.Chains), len(n.Maps))
		}
	}
}

func nftablesBreakage(ctx context.Context, t *testing.T, a dpAgent, svc kubeproxy.ServicePortName, clusterIP string) {
	chain := kubeproxy.NFTablesChainsFor(svc).Service
	nftReadersAgree(ctx, t, "healthy")
	t.Run("service-ips element deleted", func(t *testing.T) {
		restore := nftSnapshot(t)
		t.Cleanup(restore)
		run(t, "nft", "delete", "element", "ip", "kube-proxy", "service-ips", "{ "+clusterIP+" . tcp . 80 }")
		f := a.waitFor(ctx, t, "kube-proxy-rules", "ServicePortNotProgrammed", true)
		if !strings.Contains(f.Message, svc.String()) {
			t.Errorf("finding does not name %s: %+v", svc, f)
		}
		a.servicesSection(ctx, t, svc, "ServicePortNotProgrammed", clusterIP+"/tcp/80 -> "+chain)
		a.explainBroken(ctx, t, svc.Namespace+"/web:80", "ServicePortNotProgrammed", kubeproxy.HopMissing, clusterIP+"/tcp/80 -> "+chain)
		nftReadersAgree(ctx, t, "service-ips element deleted")
		restore()
		a.waitFor(ctx, t, "kube-proxy-rules", "RulesMatchAPI", true)
	})
	t.Run("service chain flushed", func(t *testing.T) {
		restore := nftSnapshot(t)
		t.Cleanup(restore)
		run(t, "nft", "flush", "chain", "ip", "kube-proxy", chain)
		a.waitFor(ctx, t, "kube-proxy-rules", "EndpointMissing", true)
		nftReadersAgree(ctx, t, "service chain flushed")
		restore()
		a.waitFor(ctx, t, "kube-proxy-rules", "RulesMatchAPI", true)
	})
	t.Run("stale DNAT", func(t *testing.T) {
		restore := nftSnapshot(t)
		t.Cleanup(restore)
		run(t, "nft", "insert", "rule", "ip", "kube-proxy", chain, "meta", "l4proto", "tcp", "dnat", "to", "10.244.0.250:8080")
		f := a.waitFor(ctx, t, "kube-proxy-rules", "StaleEndpoint", true)
		if !strings.Contains(f.Details["actual"], "10.244.0.250:8080") {
			t.Errorf("stale endpoint not named: %+v", f)
		}
		a.explainBroken(ctx, t, svc.Namespace+"/web:http", "StaleEndpoint", kubeproxy.HopStale, "10.244.0.250:8080")
		nftReadersAgree(ctx, t, "stale DNAT")
		restore()
		a.waitFor(ctx, t, "kube-proxy-rules", "StaleEndpoint", false)
	})
}

var policyRe = regexp.MustCompile(`(?m)^:FORWARD (\S+)`)

// filterBreakage breaks the FORWARD path and the backends, in either mode.
func filterBreakage(ctx context.Context, t *testing.T, a dpAgent, podCIDR string) {
	t.Run("FORWARD policy DROP", func(t *testing.T) {
		policy := "ACCEPT"
		if m := policyRe.FindStringSubmatch(run(t, "iptables-nft-save", "-t", "filter")); m != nil {
			policy = m[1]
		}
		t.Cleanup(func() { _, _ = exec.Command("iptables-nft", "-P", "FORWARD", policy).CombinedOutput() })
		run(t, "iptables-nft", "-P", "FORWARD", "DROP")
		a.waitFor(ctx, t, "forward-policy", "ForwardDropsPodTraffic", true)
		run(t, "iptables-nft", "-P", "FORWARD", policy)
		a.waitFor(ctx, t, "forward-policy", "ForwardDropsPodTraffic", false)
	})
	t.Run("DROP rule for the pod CIDR", func(t *testing.T) {
		rule := []string{"FORWARD", "-d", podCIDR, "-m", "comment", "--comment", "node-doctor e2e", "-j", "DROP"}
		t.Cleanup(func() { _, _ = exec.Command("iptables-nft", append([]string{"-D"}, rule...)...).CombinedOutput() })
		run(t, "iptables-nft", append([]string{"-I"}, rule...)...)
		f := a.waitFor(ctx, t, "forward-policy", "PodTrafficDropped", true)
		if !strings.Contains(f.Message, podCIDR) {
			t.Errorf("rule not named: %+v", f)
		}
		run(t, "iptables-nft", append([]string{"-D"}, rule...)...)
		a.waitFor(ctx, t, "forward-policy", "PodTrafficDropped", false)
	})
	t.Run("KUBE chains in the other backend", func(t *testing.T) {
		if _, err := exec.LookPath("iptables-legacy"); err != nil {
			t.Skip("no iptables-legacy")
		}
		chain := "KUBE-ND-E2E-CANARY"
		t.Cleanup(func() { _, _ = exec.Command("iptables-legacy", "-t", "filter", "-X", chain).CombinedOutput() })
		run(t, "iptables-legacy", "-t", "filter", "-N", chain)
		a.waitFor(ctx, t, "iptables-backends", "KubeChainsInBothBackends", true)
		run(t, "iptables-legacy", "-t", "filter", "-X", chain)
		a.waitFor(ctx, t, "iptables-backends", "KubeChainsInBothBackends", false)
	})
}
