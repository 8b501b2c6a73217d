//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/node-doctor/node-doctor/pkg/kubeproxy"
	"github.com/node-doctor/node-doctor/test/harness"
)

// execReader makes the agent read rules with iptables-save and nft, the
// processes the hanging wrappers stand in for (the netlink readers run no
// process; TestDataplane proves they read what these tools print).
const execReader = "dataplane:\n  reader: exec\n"

// kpFaultChecks run on the fault intervals (interval = timeout = 6s).
var kpFaultChecks = []string{"kube-proxy-rules", "kube-proxy-health"}

// TestFaultKubeProxy runs the agent as a process on the harness node
// (E2E_PROXY_MODE=iptables|nftables, default iptables) and: kills
// kube-proxy and restarts it; flushes and restores kube-proxy's rules over
// and over while the checks run; holds the xtables lock past the check
// timeout; makes the rule reader hang (sleeping, then SIGSTOPped) through a
// wrapper on the agent's PATH. Each must be reported for what it is, never
// crash the agent, and clear.
func TestFaultKubeProxy(t *testing.T) {
	harness.RequireRoot(t)
	mode := os.Getenv("E2E_PROXY_MODE")
	if mode == "" {
		mode = "iptables"
	}
	bin := buildAgent(t)
	tools := newHangingTools(t)
	c := harness.StartT(t, harness.Options{ProxyMode: mode})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()

	ns, err := c.CreateNamespace(ctx, "fault-kp")
	if err != nil {
		t.Fatal(err)
	}
	web, err := c.CreateServiceWithEndpoints(ctx, ns, "web", 2)
	if err != nil {
		t.Fatal(err)
	}
	clusterIP := web.Service.Spec.ClusterIP
	podIPs := []string{web.Pods[0].Status.PodIP, web.Pods[1].Status.PodIP}
	waitProgrammed := func() {
		t.Helper()
		if err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
			ok, _, err := c.ServiceProgrammed(ctx, ns, "web", "http", clusterIP, podIPs)
			return ok && err == nil, nil
		}); err != nil {
			t.Fatalf("kube-proxy did not program %s/web", ns)
		}
	}
	waitProgrammed()
	svc := kubeproxy.ServicePortName{Namespace: ns, Name: "web", Port: "http", Protocol: "tcp"}

	a := startMetricsAgentConfig(t, bin, execReader, kpFaultChecks, faultInterval, faultTimeout, []string{"PATH=" + tools.dir + ":" + os.Getenv("PATH")},
		"--kubeconfig", c.Kubeconfig, "--node-name", c.NodeName)
	a.waitStatus(t, "kube-proxy-rules", "ok", 60*time.Second)
	a.waitStatus(t, "kube-proxy-health", "ok", 30*time.Second)
	bound := faultInterval + faultTimeout + scrapeSlack

	t.Run("killed", func(t *testing.T) {
		restart, err := c.Kill(ctx, "kube-proxy")
		if err != nil {
			t.Fatal(err)
		}
		restarted := false
		t.Cleanup(func() {
			if !restarted {
				_ = restart(ctx)
			}
		})
		start := time.Now()
		a.waitReason(t, "kube-proxy-health", "KubeProxyNotRunning", bound)
		t.Logf("kube-proxy-health KubeProxyNotRunning %s after the kill", time.Since(start).Round(100*time.Millisecond))
		a.waitReason(t, "kube-proxy-rules", "KubeProxyModeUnknown", bound)
		if s, m := a.status(t, "kube-proxy-rules"); s != "warning" {
			t.Errorf("kube-proxy-rules with kube-proxy dead: %s %v, want warning KubeProxyModeUnknown (rules still compared)", s, reasons(m, "kube-proxy-rules"))
		}
		restarted = true
		if err := restart(ctx); err != nil {
			t.Fatal(err)
		}
		start = time.Now()
		a.waitStatus(t, "kube-proxy-health", "ok", 60*time.Second)
		a.waitStatus(t, "kube-proxy-rules", "ok", 60*time.Second)
		t.Logf("both clear %s after the restart", time.Since(start).Round(100*time.Millisecond))
	})

	t.Run("rules flushed mid-verification", func(t *testing.T) {
		var restore func()
		var flush []func()
		if mode == "iptables" {
			restore = natSnapshot(t)
			chain := kubeproxy.IPTablesChainsFor(svc).SVC
			flush = []func(){
				func() { run(t, "iptables-nft", "-t", "nat", "-F", chain) },
				func() { run(t, "iptables-nft", "-t", "nat", "-F", "KUBE-SERVICES") },
			}
		} else {
			restore = nftSnapshot(t)
			chain := kubeproxy.NFTablesChainsFor(svc).Service
			flush = []func(){
				func() { run(t, "nft", "flush", "chain", "ip", "kube-proxy", chain) },
				func() { run(t, "nft", "flush", "map", "ip", "kube-proxy", "service-ips") },
			}
		}
		t.Cleanup(restore)
		before := a.counters(t, "kube-proxy-rules")
		seen := map[string]int{}
		deadline := time.Now().Add(4 * faultInterval)
		for i := 0; time.Now().Before(deadline); i++ {
			flush[i%len(flush)]()
			time.Sleep(time.Duration(100+rand.IntN(600)) * time.Millisecond)
			restore()
			time.Sleep(time.Duration(100+rand.IntN(600)) * time.Millisecond)
			a.alive(t)
			s, m := a.status(t, "kube-proxy-rules")
			seen[s+" "+strings.Join(sorted(reasons(m, "kube-proxy-rules")), ",")]++
		}
		after := a.counters(t, "kube-proxy-rules")
		t.Logf("kube-proxy-rules while flushing and restoring: %v; errors %v -> %v", seen, before, after)
		if after != before {
			t.Errorf("kube-proxy-rules could not run while rules changed under it: errors/timeouts/skips %v -> %v", before, after)
		}

		// Left flushed: the service's rules are missing, and reported.
		flush[0]()
		start := time.Now()
		a.waitReason(t, "kube-proxy-rules", "EndpointMissing", bound)
		t.Logf("flushed: EndpointMissing after %s", time.Since(start).Round(100*time.Millisecond))

		// kube-proxy rewrites its rules when it starts; nothing stale may
		// be left once it has.
		restart, err := c.Kill(ctx, "kube-proxy")
		if err != nil {
			t.Fatal(err)
		}
		if err := restart(ctx); err != nil {
			t.Fatal(err)
		}
		waitProgrammed()
		start = time.Now()
		a.waitStatus(t, "kube-proxy-rules", "ok", 60*time.Second)
		t.Logf("resynced by kube-proxy: ok after %s", time.Since(start).Round(100*time.Millisecond))
		for end := time.Now().Add(2 * faultInterval); time.Now().Before(end); time.Sleep(time.Second) {
			if s, m := a.status(t, "kube-proxy-rules"); s != "ok" {
				t.Fatalf("after kube-proxy resynced: %s %v", s, reasons(m, "kube-proxy-rules"))
			}
		}
	})

	t.Run("xtables lock held", func(t *testing.T) {
		a.waitStatus(t, "kube-proxy-rules", "ok", 60*time.Second)
		hold := 2*faultTimeout + faultInterval
		if _, err := os.Stat("/run/xtables.lock"); errors.Is(err, os.ErrNotExist) {
			t.Cleanup(func() { _ = os.Remove("/run/xtables.lock") })
		}
		lock := exec.Command("flock", "/run/xtables.lock", "sleep", strconv.Itoa(int(hold.Seconds())))
		if err := lock.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { _ = lock.Wait(); close(done) }()
		t.Cleanup(func() { _ = lock.Process.Kill(); <-done })
		time.Sleep(500 * time.Millisecond)
		// The lock is really held: a non-blocking flock fails.
		if err := exec.Command("flock", "-n", "/run/xtables.lock", "true").Run(); err == nil {
			t.Fatal("flock -n got /run/xtables.lock: the holder does not hold it")
		}
		before := a.counters(t, "kube-proxy-rules")
		runs := a.runs(t, "kube-proxy-rules")
		seen := map[string]int{}
		for {
			select {
			case <-done:
			case <-time.After(time.Second):
				s, _ := a.status(t, "kube-proxy-rules")
				seen[s]++
				continue
			}
			break
		}
		after := a.counters(t, "kube-proxy-rules")
		t.Logf("xtables lock held %s: kube-proxy-rules %v, %g runs, errors %v -> %v", hold, seen, a.runs(t, "kube-proxy-rules")-runs, before, after)
		if after != before || len(seen) != 1 || seen["ok"] == 0 {
			t.Errorf("iptables-save/nft do not take the xtables lock, so the check must go on as before: %v, errors %v -> %v", seen, before, after)
		}
		if a.runs(t, "kube-proxy-rules") == runs {
			t.Error("kube-proxy-rules did not run while the lock was held")
		}
	})

	for _, how := range []string{"sleep", "stop"} {
		t.Run("reader hangs ("+how+")", func(t *testing.T) {
			before := a.counters(t, "kube-proxy-rules")
			tools.hang(t, how)
			// An unchanged ruleset is not read again: a new Service makes
			// kube-proxy write, and the next round read.
			if _, err := c.CreateService(ctx, ns, "hang-"+how, map[string]string{"app": "hang-" + how}, 80, 8080); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			a.waitStatus(t, "kube-proxy-rules", "error", bound)
			t.Logf("kube-proxy-rules could not run %s after the reader hung", time.Since(start).Round(100*time.Millisecond))
			// One hung check holds up no other.
			if s, m := a.status(t, "kube-proxy-health"); s != "ok" {
				t.Errorf("kube-proxy-health while the rule reader hangs: %s %v", s, reasons(m, "kube-proxy-health"))
			}
			time.Sleep(2 * faultInterval)
			after := a.counters(t, "kube-proxy-rules")
			if after[1] <= before[1] {
				t.Errorf("no timeouts counted: %v -> %v", before, after)
			}
			t.Logf("errors/timeouts/skips %v -> %v", before, after)
			rep, d := checkOnce(ctx, t, bin, tools.dir, c)
			if rep.Status != "error" || !strings.Contains(rep.Error, "timed out") {
				t.Errorf("node-doctor check with the reader hung: %s %q, want error \"timed out\"", rep.Status, rep.Error)
			}
			t.Logf("node-doctor check: %s after %s: %s", rep.Status, d.Round(100*time.Millisecond), rep.Error)

			tools.hang(t, "")
			start = time.Now()
			a.waitStatus(t, "kube-proxy-rules", "ok", bound)
			t.Logf("recovered %s after the reader was fixed", time.Since(start).Round(100*time.Millisecond))
			// Every hung reader the agent started is gone.
			if kids := childrenOf(a.cmd.Process.Pid); len(kids) > 0 {
				t.Errorf("the agent left readers behind: %v", kids)
			}
		})
	}
}

// hangingTools wraps iptables-*-save and nft: while the flag file says
// "sleep" they sleep for an hour, while it says "stop" they SIGSTOP
// themselves; otherwise they run the real tool.
type hangingTools struct{ dir, flag string }

func newHangingTools(t *testing.T) *hangingTools {
	t.Helper()
	h := &hangingTools{dir: t.TempDir()}
	h.flag = filepath.Join(h.dir, "hang")
	for _, tool := range []string{"iptables-nft-save", "iptables-legacy-save", "ip6tables-nft-save", "ip6tables-legacy-save", "nft"} {
		real, err := exec.LookPath(tool)
		if err != nil {
			t.Fatal(err)
		}
		script := fmt.Sprintf("#!/bin/sh\ncase \"$(cat %s 2>/dev/null)\" in\nsleep) exec sleep 3600 ;;\nstop) kill -STOP $$ ;;\nesac\nexec %s \"$@\"\n", h.flag, real)
		if err := os.WriteFile(filepath.Join(h.dir, tool), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = os.Remove(h.flag) })
	return h
}

func (h *hangingTools) hang(t *testing.T, how string) {
	t.Helper()
	if how == "" {
		if err := os.Remove(h.flag); err != nil {
			t.Fatal(err)
		}
		return
	}
	if err := os.WriteFile(h.flag, []byte(how), 0o644); err != nil {
		t.Fatal(err)
	}
}

// counters returns a check's errors, timeouts and skips so far.
func (a *metricsAgent) counters(t *testing.T, chk string) [3]float64 {
	t.Helper()
	m, err := a.scrape()
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	var out [3]float64
	for i, n := range []string{"errors", "timeouts", "skipped"} {
		out[i] = m[fmt.Sprintf("node_doctor_check_%s_total{check=%q}", n, chk)]
	}
	return out
}

// runs returns how many runs of chk the duration histogram counted.
func (a *metricsAgent) runs(t *testing.T, chk string) float64 {
	t.Helper()
	m, err := a.scrape()
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	return m[fmt.Sprintf("node_doctor_check_duration_seconds_count{check=%q}", chk)]
}

// waitReason waits until chk has a warning or problem finding with reason.
func (a *metricsAgent) waitReason(t *testing.T, chk, reason string, max time.Duration) {
	t.Helper()
	waitFor(t, chk+" "+reason, max, func() (bool, string) {
		a.alive(t)
		s, m := a.status(t, chk)
		r := reasons(m, chk)
		return slices.Contains(r, reason), fmt.Sprintf("%s %v", s, r)
	})
}

func sorted(s []string) []string {
	slices.Sort(s)
	return s
}

type checkResult struct {
	Check, Status string
	Error         string `json:"error"`
}

// checkOnce runs `node-doctor check` for kube-proxy-rules with the wrapped
// tools first on PATH.
func checkOnce(ctx context.Context, t *testing.T, bin, dir string, c *harness.Cluster) (checkResult, time.Duration) {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(execReader+"checks:\n  kube-proxy-rules: {interval: %s, timeout: %s}\n", faultInterval, faultTimeout)), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, bin, "check", "-o", "json", "--config", cfg, "--kubeconfig", c.Kubeconfig, "--node-name", c.NodeName, "--only", "kube-proxy-rules")
	cmd.Env = append(os.Environ(), "PATH="+dir+":"+os.Getenv("PATH"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("node-doctor check: %v", err)
	}
	if strings.Contains(stderr.String(), "panic") {
		t.Errorf("node-doctor check panicked:\n%s", stderr.String())
	}
	var rep struct{ Results []checkResult }
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil || len(rep.Results) != 1 {
		t.Fatalf("node-doctor check -o json: %v\n%s\n%s", err, stdout.String(), stderr.String())
	}
	return rep.Results[0], d
}

// childrenOf lists the child processes of pid that sleep or are stopped:
// hung readers (a healthy reader may be running at any moment).
func childrenOf(pid int) []string {
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range ents {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", child))
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		f := strings.Fields(string(b[i+1:]))
		comm := string(b[bytes.IndexByte(b, '(')+1 : i])
		if len(f) > 2 && f[1] == strconv.Itoa(pid) && (f[0] == "T" || comm == "sleep") {
			out = append(out, fmt.Sprintf("%d %s %s", child, f[0], comm))
		}
	}
	return out
}
