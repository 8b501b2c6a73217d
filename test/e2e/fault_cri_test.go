//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/node-doctor/node-doctor/internal/testmetrics"
	"github.com/node-doctor/node-doctor/pkg/check"
	"github.com/node-doctor/node-doctor/pkg/cri"
	"github.com/node-doctor/node-doctor/test/harness"
)

// Scheduling of the checks in the fault tests. The runtime checks' timeout
// exceeds the client's per-call timeout (cri.DefaultCallTimeout) so a hung
// runtime is a finding, not a timed-out run, and their interval exceeds the
// snapshot's reuse (cri.DefaultMaxAge) by more than a snapshot takes, as with
// the default 30s, so each run asks the runtime afresh.
const (
	faultInterval    = 6 * time.Second
	faultTimeout     = 6 * time.Second
	criFaultInterval = 15 * time.Second
	criFaultTimeout  = 8 * time.Second
	// scrapeSlack covers the poll period and the scrape itself.
	scrapeSlack = 2 * time.Second
	faultRounds = 2
)

// Leak tolerance: the minimum over a few samples still moves by a goroutine
// or two (a check run in flight, the scrape itself).
const (
	goroutineSlack = 3
	fdSlack        = 2
)

// criFault breaks the runtime one way and returns how to undo it.
type criFault struct {
	name  string
	apply func(ctx context.Context, t *testing.T, c *harness.Containerd) (undo func())
}

// TestFaultCRIReconnectNoLeak runs the agent as a process against a real
// containerd and puts it through rounds of: containerd killed (stale socket),
// socket removed, a socket that accepts but never answers, containerd frozen.
// Each fault must be reported by cri-runtime within one interval plus the
// timeout and clear after recovery; afterwards the agent's goroutines
// (go_goroutines) and open fds (/proc/<pid>/fd) must be back at the baseline.
// An in-process cri.Client goes through the same faults and is measured the
// same way, and a control leaks one grpc.ClientConn per fault to show the
// measurement catches such a leak.
func TestFaultCRIReconnectNoLeak(t *testing.T) {
	harness.RequireRoot(t)
	waitForFreeHarness(t, 15*time.Minute)
	bin := buildAgent(t)
	c := harness.StartContainerdT(t, harness.ContainerdOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()

	a := startMetricsAgent(t, bin, faultCRIChecks, criFaultInterval, criFaultTimeout, nil, "--runtime-endpoint", c.Endpoint, "--only", strings.Join(faultCRIChecks, ","))
	a.waitStatus(t, "cri-runtime", "ok", 2*criFaultInterval)

	client := cri.NewClient(cri.ClientOptions{
		Endpoints: cri.EndpointOptions{RuntimeEndpoint: c.Endpoint, HostFS: os.DirFS("/")},
		Timeout:   2 * time.Second,
	})
	defer client.Close()
	src := cri.NewSource(client, cri.SourceOptions{MaxAge: time.Millisecond})
	runtimeDef := cri.RuntimeCheck(src)
	inProcess := func() check.Finding {
		src.Invalidate()
		f, err := runtimeDef.Check.Run(ctx)
		if err != nil || len(f) == 0 {
			t.Fatalf("in-process cri-runtime: %v %v", err, f)
		}
		return f[0]
	}
	if f := inProcess(); f.Reason != "RuntimeResponding" {
		t.Fatalf("in-process cri-runtime before any fault: %s %s", f.Reason, f.Message)
	}

	time.Sleep(criFaultInterval) // past the first runs' one-off allocations
	agentBase := a.usage(t)
	selfBase := selfUsage()
	t.Logf("baseline: agent %s; test process %s", agentBase, selfBase)

	faults := criFaults()
	for round := 1; round <= faultRounds; round++ {
		for _, f := range faults {
			start := time.Now()
			undo := f.apply(ctx, t, c)
			bound := criFaultInterval + criFaultTimeout + scrapeSlack
			reason, ok := a.waitProblem(t, "cri-runtime", bound)
			if !ok {
				undo()
				t.Fatalf("round %d, %s: cri-runtime did not report a problem within %s (interval + timeout + scrape)", round, f.name, bound)
			}
			got := inProcess()
			t.Logf("round %d, %s: agent %s after %s; in-process %s", round, f.name, reason, time.Since(start).Round(100*time.Millisecond), got.Reason)
			if got.Severity != check.SeverityProblem {
				t.Errorf("round %d, %s: in-process cri-runtime: %s %s", round, f.name, got.Reason, got.Message)
			}
			start = time.Now()
			undo()
			a.waitStatus(t, "cri-runtime", "ok", 2*criFaultInterval+criFaultTimeout)
			t.Logf("round %d, %s: cleared %s after recovery", round, f.name, time.Since(start).Round(100*time.Millisecond))
			waitInProcess(t, inProcess, 30*time.Second)
		}
	}

	time.Sleep(criFaultInterval)
	agentAfter := a.usage(t)
	selfAfter := selfUsage()
	t.Logf("after %d faults: agent %s; test process %s", faultRounds*len(faults), agentAfter, selfAfter)
	if err := leaked(agentBase, agentAfter); err != nil {
		t.Errorf("agent: %v", err)
	}
	if err := leaked(selfBase, selfAfter); err != nil {
		t.Errorf("in-process client: %v", err)
	}

	// Control: the same faults, leaking one connected ClientConn each, as
	// a client that forgot to close on reconnect would.
	var kept []*grpc.ClientConn
	defer func() {
		for _, cc := range kept {
			_ = cc.Close()
		}
	}()
	selfBase = selfUsage()
	for _, f := range faults {
		undo := f.apply(ctx, t, c)
		undo()
		waitInProcess(t, inProcess, 30*time.Second)
		cc, err := harness.DialCRI(ctx, c.Endpoint)
		if err != nil {
			t.Fatal(err)
		}
		kept = append(kept, cc)
		if _, err := runtimeapi.NewRuntimeServiceClient(cc).Version(ctx, &runtimeapi.VersionRequest{}); err != nil {
			t.Fatalf("control conn: %v", err)
		}
	}
	selfAfter = selfUsage()
	err := leaked(selfBase, selfAfter)
	t.Logf("control, %d ClientConns leaked: %s -> %s: %v", len(kept), selfBase, selfAfter, err)
	if err == nil {
		t.Errorf("the leak measurement did not notice %d leaked grpc.ClientConns (%s -> %s)", len(kept), selfBase, selfAfter)
	}
	a.stop(t)
}

func criFaults() []criFault {
	return []criFault{
		{"containerd killed", func(ctx context.Context, t *testing.T, c *harness.Containerd) func() {
			restart := killContainerd(ctx, t, c)
			return func() { restart() }
		}},
		{"socket removed", func(ctx context.Context, t *testing.T, c *harness.Containerd) func() {
			restart := killContainerd(ctx, t, c)
			if err := os.Remove(c.Address); err != nil {
				t.Fatal(err)
			}
			return func() { restart() }
		}},
		{"socket accepts, never answers", func(ctx context.Context, t *testing.T, c *harness.Containerd) func() {
			restart := killContainerd(ctx, t, c)
			_ = os.Remove(c.Address)
			stop := silentSocket(t, c.Address)
			return func() {
				stop()
				restart()
			}
		}},
		{"containerd frozen", func(ctx context.Context, t *testing.T, c *harness.Containerd) func() {
			pid := c.Proc.Pid
			if err := syscall.Kill(-pid, syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			return func() { _ = syscall.Kill(-pid, syscall.SIGCONT) }
		}},
	}
}

// killContainerd SIGKILLs containerd and returns a restart that waits until
// it answers again.
func killContainerd(ctx context.Context, t *testing.T, c *harness.Containerd) func() {
	t.Helper()
	restart, err := c.Kill(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		if err := restart(ctx); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(60 * time.Second)
		for {
			cc, err := harness.DialCRI(ctx, c.Endpoint)
			if err == nil {
				cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				_, err = runtimeapi.NewRuntimeServiceClient(cc).Version(cctx, &runtimeapi.VersionRequest{})
				cancel()
				_ = cc.Close()
			}
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("containerd not answering 60s after restart: %v", err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// silentSocket listens on path and holds every connection open without a
// byte of answer, until its client hangs up. stop closes it all and removes
// the socket.
func silentSocket(t *testing.T, path string) (stop func()) {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				_, _ = io.Copy(io.Discard, conn)
			}()
		}
	}()
	stopped := false
	return func() {
		if stopped {
			return
		}
		stopped = true
		_ = l.Close() // also removes the socket file
		<-done
	}
}

func waitInProcess(t *testing.T, run func() check.Finding, max time.Duration) {
	t.Helper()
	deadline := time.Now().Add(max)
	for {
		f := run()
		if f.Reason == "RuntimeResponding" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("in-process cri-runtime still %s after %s: %s", f.Reason, max, f.Message)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// usage is a process's goroutines and open file descriptors.
type usage struct{ goroutines, fds int }

func (u usage) String() string { return fmt.Sprintf("%d goroutines, %d fds", u.goroutines, u.fds) }

// leaked compares two minima with the slack above.
func leaked(before, after usage) error {
	if after.goroutines > before.goroutines+goroutineSlack || after.fds > before.fds+fdSlack {
		return fmt.Errorf("leak: %s at the baseline, %s after (tolerance %d goroutines, %d fds)",
			before, after, goroutineSlack, fdSlack)
	}
	return nil
}

func countFDs(pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return len(ents)
}

// selfUsage is the test process's minimum over a few samples.
func selfUsage() usage {
	u := usage{1 << 30, 1 << 30}
	for range 8 {
		runtime.GC()
		u.goroutines = min(u.goroutines, runtime.NumGoroutine())
		u.fds = min(u.fds, countFDs(os.Getpid()))
		time.Sleep(250 * time.Millisecond)
	}
	return u
}

// metricsAgent is `node-doctor run` without a cluster, its checks on short
// intervals, metrics on a loopback port.
type metricsAgent struct {
	*agentProc
	url string
	// http keeps no connection alive: a held scrape connection would
	// count as the agent's.
	http *http.Client

	mu     sync.Mutex
	panics []string
	tail   []string
}

// faultCRIChecks are the runtime checks the agent runs in the CRI fault test.
var faultCRIChecks = []string{"cri-runtime", "cri-runtime-ready", "cri-sandbox-image", "cri-crash-loop", "cri-restart-loop", "cri-oom-killed", "cri-sandboxes", "cri-stuck-containers"}

// startMetricsAgent runs the agent with checks on the fault intervals; env
// entries override the test's environment.
func startMetricsAgent(t *testing.T, bin string, checks []string, interval, timeout time.Duration, env []string, args ...string) *metricsAgent {
	t.Helper()
	return startMetricsAgentConfig(t, bin, "", checks, interval, timeout, env, args...)
}

// startMetricsAgentConfig is startMetricsAgent with extra top-level config
// (YAML lines) before the checks.
func startMetricsAgentConfig(t *testing.T, bin, extra string, checks []string, interval, timeout time.Duration, env []string, args ...string) *metricsAgent {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	var b strings.Builder
	b.WriteString(extra)
	b.WriteString("checks:\n")
	for _, name := range checks {
		fmt.Fprintf(&b, "  %s: {interval: %s, timeout: %s}\n", name, interval, timeout)
	}
	if err := os.WriteFile(cfg, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, append([]string{"run", "--config", cfg, "--metrics-address", addr}, args...)...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KUBECONFIG=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ap := &agentProc{cmd: cmd, done: make(chan error, 1)}
	a := &metricsAgent{agentProc: ap, url: "http://" + addr + "/metrics",
		http: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64*1024), 1<<20)
		for sc.Scan() {
			l := sc.Text()
			a.mu.Lock()
			if strings.Contains(l, "panic") || strings.HasPrefix(l, "goroutine ") {
				a.panics = append(a.panics, l)
			}
			if a.tail = append(a.tail, l); len(a.tail) > 100 {
				a.tail = a.tail[1:]
			}
			a.mu.Unlock()
		}
	}()
	go func() { ap.done <- cmd.Wait() }()
	t.Cleanup(func() {
		ap.stop(t)
		a.mu.Lock()
		defer a.mu.Unlock()
		if len(a.panics) > 0 {
			t.Errorf("agent logged a panic:\n%s", strings.Join(a.panics, "\n"))
		}
		if t.Failed() {
			t.Logf("agent log, last %d lines:\n%s", len(a.tail), strings.Join(a.tail, "\n"))
		}
	})
	return a
}

// scrape returns every sample line of /metrics by series.
func (a *metricsAgent) scrape() (map[string]float64, error) {
	return testmetrics.Scrape(context.Background(), a.http, a.url)
}

func (a *metricsAgent) status(t *testing.T, chk string) (string, map[string]float64) {
	t.Helper()
	m, err := a.scrape()
	if err != nil {
		return "scrape failed: " + err.Error(), nil
	}
	for _, s := range []string{"ok", "warning", "problem", "error", "not_applicable"} {
		if m[fmt.Sprintf("node_doctor_check_status{check=%q,status=%q}", chk, s)] == 1 {
			return s, m
		}
	}
	return "none", m
}

func (a *metricsAgent) waitStatus(t *testing.T, chk, want string, max time.Duration) {
	t.Helper()
	waitFor(t, chk+" "+want, max, func() (bool, string) {
		a.alive(t)
		s, _ := a.status(t, chk)
		return s == want, s
	})
}

// reasons returns the reasons of chk's warning and problem findings (the
// gauge counts the findings with each reason).
func reasons(m map[string]float64, chk string) []string {
	prefix := fmt.Sprintf("node_doctor_findings{check=%q,", chk)
	var out []string
	for k, v := range m {
		if v > 0 && strings.HasPrefix(k, prefix) {
			if i := strings.Index(k, `reason="`); i >= 0 {
				out = append(out, strings.SplitN(k[i+len(`reason="`):], `"`, 2)[0])
			}
		}
	}
	return out
}

// waitProblem waits for a problem finding of chk and returns its reason.
func (a *metricsAgent) waitProblem(t *testing.T, chk string, max time.Duration) (string, bool) {
	t.Helper()
	deadline := time.Now().Add(max)
	for time.Now().Before(deadline) {
		a.alive(t)
		s, m := a.status(t, chk)
		if s == "problem" {
			return strings.Join(reasons(m, chk), ","), true
		}
		time.Sleep(250 * time.Millisecond)
	}
	return "", false
}

// alive fails the test if the agent exited.
func (a *metricsAgent) alive(t *testing.T) {
	t.Helper()
	select {
	case err := <-a.done:
		a.done <- err
		t.Fatalf("agent exited: %v", err)
	default:
	}
}

// usage is the agent's minimum over a few samples of go_goroutines and
// /proc/<pid>/fd.
func (a *metricsAgent) usage(t *testing.T) usage {
	t.Helper()
	u := usage{1 << 30, 1 << 30}
	for range 8 {
		m, err := a.scrape()
		if err != nil {
			t.Fatalf("scrape: %v", err)
		}
		g, ok := m["go_goroutines"]
		if !ok {
			t.Fatal("no go_goroutines in /metrics")
		}
		u.goroutines = min(u.goroutines, int(g))
		u.fds = min(u.fds, countFDs(a.cmd.Process.Pid))
		time.Sleep(250 * time.Millisecond)
	}
	return u
}
