package kernel

import (
	"bufio"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/node-doctor/node-doctor/pkg/check"
)

type ruleCase struct {
	Reason    string            `yaml:"reason"`
	Condition string            `yaml:"condition"`
	Lines     []string          `yaml:"lines"`
	Details   map[string]string `yaml:"details"`
}

func loadCases(t *testing.T) []ruleCase {
	t.Helper()
	b, err := os.ReadFile("testdata/default-rules-cases.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cases []ruleCase
	if err := yaml.Unmarshal(b, &cases); err != nil {
		t.Fatal(err)
	}
	return cases
}

func mustDefaults(t testing.TB) *RuleSet {
	t.Helper()
	set, err := DefaultRules()
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// feed runs lines through a fresh monitor, one second apart, and returns
// its findings that are not ok.
func feed(t testing.TB, set *RuleSet, lines ...string) []check.Finding {
	t.Helper()
	now := time.Date(2026, 11, 23, 14, 0, 0, 0, time.UTC)
	clk := clocktesting.NewFakeClock(now)
	mo := NewMonitor(set, clk, 0)
	for i, l := range lines {
		mo.HandleLine(Line{Time: now.Add(time.Duration(i-len(lines)) * time.Second), Text: []byte(l)})
	}
	var out []check.Finding
	for _, f := range mo.Findings(now) {
		if f.Severity != check.SeverityOK {
			out = append(out, f)
		}
	}
	return out
}

func TestDefaultRulesOnRealKernelLines(t *testing.T) {
	set := mustDefaults(t)
	covered := map[string]bool{}
	for _, c := range loadCases(t) {
		covered[c.Reason] = true
		t.Run(c.Reason, func(t *testing.T) {
			got := feed(t, set, c.Lines...)
			if len(got) != 1 || got[0].Reason != c.Reason {
				t.Fatalf("lines %q gave findings %+v, want one %s", c.Lines, got, c.Reason)
			}
			f := got[0]
			if f.Condition != c.Condition {
				t.Errorf("condition = %q, want %q", f.Condition, c.Condition)
			}
			if f.Time.IsZero() {
				t.Error("finding has no time")
			}
			for k, v := range c.Details {
				if f.Details[k] != v {
					t.Errorf("details[%s] = %q, want %q (all: %v)", k, f.Details[k], v, f.Details)
				}
			}
			if f.Message == "" || strings.Contains(f.Message, "$") {
				t.Errorf("message %q is empty or has an unexpanded group", f.Message)
			}
			t.Logf("%s: %s", f.Reason, f.Message)
		})
	}
	for _, r := range set.Rules {
		if !covered[r.Reason] {
			t.Errorf("default rule %d %s has no test line in testdata/default-rules-cases.yaml", r.Index, r.Reason)
		}
	}
}

// TestDefaultRulesIgnoreNoise feeds a real node's boot and pod churn log:
// nothing in it is a problem.
func TestDefaultRulesIgnoreNoise(t *testing.T) {
	lines := readLines(t, "testdata/dmesg-noise.txt")
	if got := feed(t, mustDefaults(t), lines...); len(got) > 0 {
		t.Errorf("noise produced findings: %+v", got)
	}
	// Near misses.
	for _, l := range []string{
		"EXT4-fs (vda): mounted filesystem 00000000-0000-0000-0000-000000000000 r/w without journal. Quota mode: none.",
		"IPv6: ADDRCONF(NETDEV_CHANGE): veth1234: link becomes ready",
		"e1000e 0000:00:1f.6 eno1: NIC Link is Up 1000 Mbps Full Duplex, Flow Control: None",
		"oom_reaper: reaped process 41234 (stress), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB",
		"hung_task: kernel.hung_task_timeout_secs is 120",
		"rcu: Hierarchical SRCU implementation.",
		"usb 1-1: new high-speed USB device number 2 using xhci_hcd",
	} {
		if got := feed(t, mustDefaults(t), l); len(got) > 0 {
			t.Errorf("%q produced findings: %+v", l, got)
		}
	}
}

func TestFrequentUnregisterNetDevice(t *testing.T) {
	line := "unregister_netdevice: waiting for eth0 to become free. Usage count = 1"
	got := feed(t, mustDefaults(t), line, line, line)
	var events, conds int
	for _, f := range got {
		switch {
		case f.Reason == "UnregisterNetDevice" && f.Condition == "":
			events++
		case f.Reason == "UnregisterNetDevice" && f.Condition == "FrequentUnregisterNetDevice":
			conds++
		}
	}
	if events != 3 || conds != 1 || len(got) != 4 {
		t.Errorf("3 lines gave %d events and %d conditions (%d findings), want 3 and 1", events, conds, len(got))
	}
}

func TestNICLinkFlappingNeedsThreeDownsInTheWindow(t *testing.T) {
	set := mustDefaults(t)
	down := "ixgbe 0000:01:00.0 eth0: NIC Link is Down"
	if got := feed(t, set, down, down); len(got) != 0 {
		t.Errorf("two downs gave %+v", got)
	}
	if got := feed(t, set, down, down, down, down, down); len(got) != 1 {
		t.Errorf("five downs gave %d findings, want one (the count restarts after firing)", len(got))
	}
}

func readLines(t testing.TB, name string) []string {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return slices.Clip(out)
}
