package main

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
)

// runtimeChecks are the checks `check --list` puts in the runtime area.
func runtimeChecks(t *testing.T) []string {
	t.Helper()
	out, _, code := runBinary(t, nil, "check", "--list")
	if code != 0 {
		t.Fatalf("check --list: exit %d", code)
	}
	var names []string
	for _, line := range strings.Split(out, "\n")[1:] {
		if f := strings.Fields(line); len(f) > 1 && f[1] == "runtime" {
			names = append(names, f[0])
		}
	}
	if len(names) < 2 {
		t.Fatalf("check --list has %d runtime checks:\n%s", len(names), out)
	}
	return names
}

// TestCheckWithoutRuntime runs check on a machine without a container
// runtime: a host root with no socket where crictl looks and no crictl
// config, and nothing in the environment naming an endpoint (a configured
// endpoint that does not answer is a problem, not "not applicable"). The
// table has one runtime row, --verbose one per check, JSON every check; the
// header names the node the checks use.
func TestCheckWithoutRuntime(t *testing.T) {
	names := runtimeChecks(t)
	env := []string{"env", "-u", "CONTAINER_RUNTIME_ENDPOINT", "-u", "IMAGE_SERVICE_ENDPOINT", "-u", "CRI_CONFIG_FILE", "-u", "NODE_NAME"}
	args := []string{"check", "--host-root", t.TempDir(), "--only", strings.Join(names, ","), "--node-name", "heldout-node"}
	const reason = "no container runtime on this machine"

	out, errOut, code := runBinary(t, env, args...)
	if code != 0 {
		t.Errorf("exit %d, want 0 (not applicable is healthy); stderr: %s", code, errOut)
	}
	if !strings.HasPrefix(out, "node-doctor ") || !strings.Contains(strings.SplitN(out, "\n", 2)[0], " report for node heldout-node at ") {
		t.Errorf("header does not name --node-name:\n%s", out)
	}
	if n := strings.Count(out, reason); n != 1 {
		t.Errorf("%q in %d rows, want 1:\n%s", reason, n, out)
	}
	for _, name := range names {
		if strings.Contains(out, name) {
			t.Errorf("collapsed table names %s:\n%s", name, out)
		}
	}
	n := len(names)
	if !regexp.MustCompile(fmt.Sprintf(`(?m)^RUNTIME\n.*\n  N/A +%d checks +- +%s`, n, reason)).MatchString(out) ||
		!strings.Contains(out, fmt.Sprintf("%d checks: 0 ok, 0 warning, 0 problem, 0 error, %d not applicable", n, n)) {
		t.Errorf("no collapsed row of %d checks or summary:\n%s", n, out)
	}

	out, _, _ = runBinary(t, env, append(args, "--verbose")...)
	if n := strings.Count(out, reason); n != len(names) {
		t.Errorf("--verbose: %q in %d rows, want %d:\n%s", reason, n, len(names), out)
	}
	for _, name := range names {
		if !regexp.MustCompile(`(?m)^  N/A +` + name + ` +- +` + reason).MatchString(out) {
			t.Errorf("--verbose: no row for %s:\n%s", name, out)
		}
	}

	r, _ := checkJSON(t, env, args[1:]...)
	if r.Node != "heldout-node" || len(r.Results) != len(names) {
		t.Errorf("JSON: node %q, %d results, want heldout-node and %d", r.Node, len(r.Results), len(names))
	}

	// Without --node-name, NODE_NAME (the DaemonSet's downward API) names it.
	out, _, _ = runBinary(t, []string{"env", "NODE_NAME=from-env"}, "check", "--host-root", t.TempDir(), "--only", names[0])
	if !strings.Contains(out, " report for node from-env at ") {
		t.Errorf("header does not name $NODE_NAME:\n%s", out)
	}
}

// TestHelpIsCurrent keeps --help in step with what node-doctor does: every
// area of checks it has, no "as they land".
func TestHelpIsCurrent(t *testing.T) {
	out, _, _ := runBinary(t, nil, "--help")
	for _, s := range []string{"hairpin", "kube-proxy's rules", "conntrack", "container runtime over CRI", "kernel log"} {
		if !strings.Contains(strings.Join(strings.Fields(out), " "), s) {
			t.Errorf("--help lacks %q:\n%s", s, out)
		}
	}
	if strings.Contains(out, "as they land") {
		t.Errorf("--help still has checks to come:\n%s", out)
	}
	out, _, _ = runBinary(t, nil, "check", "--help")
	for _, s := range []string{"does not apply as a whole", "the report names"} {
		if !strings.Contains(out, s) {
			t.Errorf("check --help lacks %q:\n%s", s, out)
		}
	}
}
