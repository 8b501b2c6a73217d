package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/node-doctor/node-doctor/internal/testnetns"
)

// nodeSnapshot captures what node-doctor must never change, as seen inside
// a network namespace: both iptables backends, the nftables ruleset, every
// /proc/sys/net value, and links with their bridge-port flags.
func nodeSnapshot(t *testing.T, ns *testnetns.NS) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, tool := range []string{"iptables-legacy-save", "iptables-nft-save", "ip6tables-legacy-save", "ip6tables-nft-save"} {
		if _, err := exec.LookPath(tool); err == nil {
			out[tool] = stripCounters(ns.Exec(t, tool))
		}
	}
	if _, err := exec.LookPath("nft"); err == nil {
		out["nft"] = ns.Exec(t, "nft", "list", "ruleset")
	}
	out["links"] = linkConfig(ns.Exec(t, "ip", "-d", "-o", "link", "show"))
	// /proc/sys/net is per network namespace: read it from inside.
	out["sysctl"] = ns.Exec(t, "sh", "-c", "grep -rs '' /proc/sys/net | grep -v '/stable_secret:' | sort; true")
	return out
}

var linkFields = regexp.MustCompile(`\b(mtu \d+|master \S+|promiscuity \d+|hairpin \w+|nf_call_\w+ \d)\b`)

// linkConfig keeps of `ip -d -o link` what configuration sets: name, admin
// flags, MTU, master, promiscuity, hairpin, bridge netfilter calls. Carrier
// and timers change on their own.
func linkConfig(s string) string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		f := strings.Fields(l)
		if len(f) < 3 {
			continue
		}
		var flags []string
		for _, fl := range strings.Split(strings.Trim(f[2], "<>"), ",") {
			if fl != "NO-CARRIER" && fl != "LOWER_UP" && fl != "M-DOWN" {
				flags = append(flags, fl)
			}
		}
		out = append(out, f[1]+" "+strings.Join(flags, ",")+" "+strings.Join(linkFields.FindAllString(l, -1), " "))
	}
	return strings.Join(out, "\n")
}

// stripCounters drops iptables-save's comment and counter lines, which
// change with traffic and time, not with configuration.
func stripCounters(s string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "#") {
			continue
		}
		if strings.HasPrefix(l, ":") {
			if i := strings.LastIndex(l, " ["); i > 0 {
				l = l[:i]
			}
		}
		keep = append(keep, l)
	}
	return strings.Join(keep, "\n")
}

// TestPrivilegedNodeUnchanged runs every check repeatedly inside a
// namespace with a pod bridge and rules in both iptables backends, and
// asserts nothing it could touch changed; in particular reading iptables
// must not create tables or chains that were not there.
func TestPrivilegedNodeUnchanged(t *testing.T) {
	ns := testnetns.New(t)
	ns.Bridge(t, "cni0", 2, true)
	ns.Sysctl(t, "net.ipv4.ip_forward", "1")
	if _, err := exec.LookPath("iptables-legacy"); err == nil {
		ns.Exec(t, "iptables-legacy", "-t", "filter", "-N", "KUBE-FORWARD")
	}
	if _, err := exec.LookPath("iptables-nft"); err == nil {
		ns.Exec(t, "iptables-nft", "-t", "nat", "-N", "KUBE-SERVICES")
	}
	before := nodeSnapshot(t, ns)

	cfg := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfg, []byte("checks: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	in := []string{"ip", "netns", "exec", ns.Name}
	for range 3 {
		for _, out := range []string{"json", "table"} {
			if _, errOut, code := runBinary(t, in, "check", "-o", out, "--config", cfg); code > 1 {
				t.Fatalf("check exit %d: %s", code, errOut)
			}
		}
	}

	after := nodeSnapshot(t, ns)
	for k, b := range before {
		if after[k] != b {
			t.Errorf("%s changed after running every check:\nbefore:\n%s\nafter:\n%s", k, b, after[k])
		}
	}
}
