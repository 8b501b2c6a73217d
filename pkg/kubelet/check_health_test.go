package kubelet

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"testing/fstest"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/node-doctor/node-doctor/pkg/check"
	"github.com/node-doctor/node-doctor/pkg/host"
)

type fakeProcs struct {
	ps  []Process
	err error
}

func (f *fakeProcs) Kubelets(context.Context) ([]Process, error) { return f.ps, f.err }

type fakeHealthz struct {
	status int
	body   string
	err    error
	urls   []string
}

func (f *fakeHealthz) Get(_ context.Context, url string) (int, string, error) {
	f.urls = append(f.urls, url)
	return f.status, f.body, f.err
}

type fakeAPI struct {
	lease, fresh *coordinationv1.Lease
	leaseErr     error
	freshErr     error
	node         *corev1.Node
	gets         int
}

func (f *fakeAPI) NodeLease() (*coordinationv1.Lease, error) { return f.lease, f.leaseErr }
func (f *fakeAPI) GetNodeLease(context.Context) (*coordinationv1.Lease, error) {
	f.gets++
	return f.fresh, f.freshErr
}
func (f *fakeAPI) Node() (*corev1.Node, error) { return f.node, nil }

func leaseRenewed(at time.Time) *coordinationv1.Lease {
	mt := metav1.NewMicroTime(at)
	d := int32(40)
	holder := "n1"
	return &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-node-lease", Name: "n1"},
		Spec: coordinationv1.LeaseSpec{RenewTime: &mt, LeaseDurationSeconds: &d, HolderIdentity: &holder}}
}

type env struct {
	clk   *clocktesting.FakeClock
	procs *fakeProcs
	hz    *fakeHealthz
	api   *fakeAPI
	fs    fstest.MapFS
	def   check.Definition
}

func newEnv(t *testing.T) *env {
	t.Helper()
	now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	e := &env{
		clk:   clocktesting.NewFakeClock(now),
		procs: &fakeProcs{ps: []Process{{PID: 42, Args: []string{"/usr/bin/kubelet", "--config=/var/lib/kubelet/config.yaml"}, State: 'S', Started: now.Add(-time.Hour)}}},
		hz:    &fakeHealthz{status: 200, body: "ok"},
		api:   &fakeAPI{lease: leaseRenewed(now.Add(-5 * time.Second))},
		fs:    fstest.MapFS{"var/lib/kubelet/config.yaml": {Data: []byte("healthzPort: 10258\n")}},
	}
	e.def = HealthCheck(HealthDeps{FS: e.fs, Processes: e.procs, Healthz: e.hz, API: e.api, Clock: e.clk})
	if err := e.def.Settings.(check.Validator).Validate(); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) run(t *testing.T) check.Finding {
	t.Helper()
	fs, err := e.def.Check.Run(context.Background())
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if len(fs) != 1 {
		t.Fatalf("%d findings: %+v", len(fs), fs)
	}
	if fs[0].Condition != check.ConditionKubeletUnhealthy {
		t.Errorf("condition %q", fs[0].Condition)
	}
	return fs[0]
}

func (e *env) start(t *testing.T) {
	t.Helper()
	if err := e.def.Check.(check.Starter).Start(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func want(t *testing.T, f check.Finding, sev check.Severity, reason string, msg ...string) {
	t.Helper()
	if f.Severity != sev || f.Reason != reason {
		t.Fatalf("got %s %s %q, want %s %s", f.Severity, f.Reason, f.Message, sev, reason)
	}
	for _, m := range msg {
		if !strings.Contains(f.Message, m) {
			t.Errorf("message %q lacks %q", f.Message, m)
		}
	}
}

func TestHealthy(t *testing.T) {
	e := newEnv(t)
	f := e.run(t)
	want(t, f, check.SeverityOK, ReasonHealthy, "pid 42", "up 1h0m0s", "Lease 5s ago")
	if len(e.hz.urls) != 1 || e.hz.urls[0] != "http://127.0.0.1:10258/healthz" {
		t.Errorf("asked %v, want the port from the kubelet's config file", e.hz.urls)
	}
}

func TestHealthzAddressSources(t *testing.T) {
	e := newEnv(t)
	e.procs.ps[0].Args = append(e.procs.ps[0].Args, "--healthz-port=10300")
	e.run(t)
	e.procs.ps[0].Args = []string{"kubelet", "--config", "/etc/missing.yaml"}
	f := e.run(t)
	e.def.Settings.(*HealthSettings).HealthzAddress = "127.0.0.2:1"
	e.run(t)
	if got := strings.Join(e.hz.urls, " "); got != "http://127.0.0.1:10300/healthz http://127.0.0.1:10248/healthz http://127.0.0.2:1/healthz" {
		t.Errorf("asked %s", got)
	}
	if !strings.Contains(f.Details["healthz_address_from"], "/etc/missing.yaml not readable") {
		t.Errorf("details %v", f.Details)
	}
	e.def.Settings.(*HealthSettings).HealthzAddress = ""
	e.fs["var/lib/kubelet/config.yaml"] = &fstest.MapFile{Data: []byte("healthzPort: 0\n")}
	e.procs.ps[0].Args = []string{"kubelet", "--config=/var/lib/kubelet/config.yaml"}
	e.hz.status = 500
	want(t, e.run(t), check.SeverityOK, ReasonHealthy)
	if len(e.hz.urls) != 3 {
		t.Errorf("healthz off but asked: %v", e.hz.urls)
	}
}

func TestNotApplicable(t *testing.T) {
	e := newEnv(t)
	e.procs.ps = nil
	e.api.lease, e.api.leaseErr = nil, errors.New("no cluster")
	delete(e.fs, "var/lib/kubelet/config.yaml")
	_, err := e.def.Check.Run(context.Background())
	if why, ok := check.IsNotApplicable(err); !ok || !strings.Contains(why, "no cluster") {
		t.Fatalf("err %v, want not applicable naming why", err)
	}
}

func TestNotRunning(t *testing.T) {
	t.Run("one-shot reports at once", func(t *testing.T) {
		e := newEnv(t)
		e.procs.ps = nil
		want(t, e.run(t), check.SeverityProblem, ReasonNotRunning, "journalctl -u kubelet")
	})
	t.Run("without a Lease but with /var/lib/kubelet", func(t *testing.T) {
		e := newEnv(t)
		e.procs.ps, e.api.lease = nil, nil
		want(t, e.run(t), check.SeverityProblem, ReasonNotRunning)
	})
	t.Run("agent waits its grace", func(t *testing.T) {
		e := newEnv(t)
		e.start(t)
		e.procs.ps = nil
		want(t, e.run(t), check.SeverityOK, ReasonCheckPending)
		e.clk.Step(9 * time.Second)
		want(t, e.run(t), check.SeverityOK, ReasonCheckPending)
		e.clk.Step(time.Second)
		want(t, e.run(t), check.SeverityProblem, ReasonNotRunning, "for 10s")
	})
	t.Run("a restart inside the grace is quiet", func(t *testing.T) {
		e := newEnv(t)
		e.start(t)
		old := e.procs.ps
		e.procs.ps = nil
		want(t, e.run(t), check.SeverityOK, ReasonCheckPending)
		e.clk.Step(5 * time.Second)
		e.procs.ps = []Process{{PID: 43, State: 'S', Started: e.clk.Now().Add(-time.Second), Args: old[0].Args}}
		e.hz.status, e.hz.err = 0, errors.New("connection refused")
		want(t, e.run(t), check.SeverityOK, ReasonStarting, "cooldown 1m0s")
		// Gone again later: the grace starts anew.
		e.procs.ps = nil
		e.clk.Step(8 * time.Second)
		want(t, e.run(t), check.SeverityOK, ReasonCheckPending)
	})
}

func TestStopped(t *testing.T) {
	e := newEnv(t)
	e.start(t)
	e.procs.ps[0].State = 'T'
	want(t, e.run(t), check.SeverityProblem, ReasonUnhealthy, "stopped", "kill -CONT 42")
	if len(e.hz.urls) != 0 {
		t.Errorf("asked healthz of a stopped kubelet: %v", e.hz.urls)
	}
}

func TestHealthzFailing(t *testing.T) {
	t.Run("one-shot", func(t *testing.T) {
		e := newEnv(t)
		e.hz.status, e.hz.body = 500, "[-]syncloop failed: reason withheld\nhealthz check failed"
		f := e.run(t)
		want(t, f, check.SeverityProblem, ReasonUnhealthy, "HTTP 500 [-]syncloop failed", "journalctl -u kubelet")
		if f.Details["healthz_url"] != "http://127.0.0.1:10258/healthz" {
			t.Errorf("details %v", f.Details)
		}
	})
	t.Run("agent: grace, then problem, then clear", func(t *testing.T) {
		e := newEnv(t)
		e.start(t)
		e.hz.status, e.hz.err = 0, errors.New("dial tcp 127.0.0.1:10258: connect: connection refused")
		want(t, e.run(t), check.SeverityOK, ReasonCheckPending)
		e.clk.Step(10 * time.Second)
		want(t, e.run(t), check.SeverityProblem, ReasonUnhealthy, "connection refused")
		e.hz.status, e.hz.err = 200, nil
		want(t, e.run(t), check.SeverityOK, ReasonHealthy)
		// A new failure has a new grace.
		e.hz.status = 503
		want(t, e.run(t), check.SeverityOK, ReasonCheckPending)
	})
	t.Run("starting kubelet within cooldown", func(t *testing.T) {
		e := newEnv(t)
		e.procs.ps[0].Started = e.clk.Now().Add(-30 * time.Second)
		e.hz.status, e.hz.err = 0, errors.New("connection refused")
		want(t, e.run(t), check.SeverityOK, ReasonStarting)
		e.clk.Step(31 * time.Second)
		want(t, e.run(t), check.SeverityProblem, ReasonUnhealthy)
	})
	t.Run("timeout capped to the run's deadline", func(t *testing.T) {
		srv := hangingServer(t)
		e := newEnv(t)
		e.def = HealthCheck(HealthDeps{FS: e.fs, Processes: e.procs, API: e.api, Clock: e.clk})
		e.def.Settings.(*HealthSettings).HealthzAddress = srv
		ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
		defer cancel()
		start := time.Now()
		fs, err := e.def.Check.Run(ctx)
		if err != nil || len(fs) != 1 {
			t.Fatalf("run: %v %v", fs, err)
		}
		want(t, fs[0], check.SeverityProblem, ReasonUnhealthy, "no answer within")
		if d := time.Since(start); d > 390*time.Millisecond {
			t.Errorf("run took %s, past its deadline's 3/4", d)
		}
	})
}

func TestLeaseStale(t *testing.T) {
	e := newEnv(t)
	old := leaseRenewed(e.clk.Now().Add(-2 * time.Minute))
	e.api.lease, e.api.fresh = old, old
	f := e.run(t)
	want(t, f, check.SeverityProblem, ReasonLeaseStale, "kube-node-lease/n1", "for 2m0s", "allowed 40s")
	// The agent's cache lagged: the API server has a fresh renewal.
	e.api.fresh = leaseRenewed(e.clk.Now().Add(-time.Second))
	want(t, e.run(t), check.SeverityOK, ReasonHealthy)
	// The agent cannot reach the API either: nothing said of the kubelet.
	e.api.fresh, e.api.freshErr = nil, errors.New("connection refused")
	want(t, e.run(t), check.SeverityOK, ReasonHealthy)
	if e.api.gets != 3 {
		t.Errorf("%d fresh reads, want 3", e.api.gets)
	}
	// A fresh cache asks nothing more of the API server.
	e.api.lease = leaseRenewed(e.clk.Now().Add(-10 * time.Second))
	want(t, e.run(t), check.SeverityOK, ReasonHealthy)
	if e.api.gets != 3 {
		t.Errorf("fresh lease read again: %d", e.api.gets)
	}
	// A kubelet younger than the lease duration is not judged by it.
	e.api.lease, e.api.fresh, e.api.freshErr = old, old, nil
	e.procs.ps[0].Started = e.clk.Now().Add(-20 * time.Second)
	want(t, e.run(t), check.SeverityOK, ReasonHealthy)
}

func TestPLEG(t *testing.T) {
	e := newEnv(t)
	e.api.node = &corev1.Node{Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{
		Type: corev1.NodeReady, Status: corev1.ConditionFalse, Reason: "KubeletNotReady",
		Message: "PLEG is not healthy: pleg was last seen active 3m5s ago; threshold is 3m0s",
	}}}}
	want(t, e.run(t), check.SeverityProblem, ReasonPLEG, "pleg was last seen active 3m5s ago", "crictl ps")
	e.api.node.Status.Conditions[0].Status = corev1.ConditionTrue
	want(t, e.run(t), check.SeverityOK, ReasonHealthy)
	// A kubelet that just restarted says so until its first relist.
	e.api.node.Status.Conditions[0].Status = corev1.ConditionFalse
	e.api.node.Status.Conditions[0].Message = "container runtime status check may not have completed yet, PLEG is not healthy: pleg has yet to be successful"
	e.procs.ps[0].Started = e.clk.Now().Add(-5 * time.Second)
	want(t, e.run(t), check.SeverityOK, ReasonHealthy)
}

func TestSettingsValidate(t *testing.T) {
	for _, s := range []HealthSettings{
		{HealthzAddress: "localhost:10248", HealthzTimeout: time.Second},
		{HealthzAddress: "127.0.0.1", HealthzTimeout: time.Second},
		{HealthzTimeout: 2 * time.Minute},
		{HealthzTimeout: time.Second, Cooldown: -1},
		{HealthzTimeout: time.Second, MaxLeaseAge: time.Second},
	} {
		if err := s.Validate(); err == nil {
			t.Errorf("%+v: no error", s)
		}
	}
}

func hangingServer(t *testing.T) string {
	t.Helper()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(release); srv.Close() })
	return srv.Listener.Addr().String()
}

// TestRealProcessAndHealthz runs a process named kubelet, stops and
// resumes it, and serves healthz on loopback: the check reads the real
// proc and asks over real HTTP.
func TestRealProcessAndHealthz(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "kubelet")
	b, err := os.ReadFile(sh)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	var hits int
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits++
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte("ok"))
	}))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = l
	srv.Start()
	defer srv.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	// sh named kubelet, with kubelet's flag as its arguments.
	cmd := exec.Command(bin, "-c", "while :; do sleep 1; done", "kubelet", "--healthz-port", port)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()

	hostFS := host.FS("/")
	procs := ProcFS{FS: hostFS}
	var me Process
	for _, p := range mustKubelets(t, procs) {
		if p.PID == cmd.Process.Pid {
			me = p
		}
	}
	if me.PID == 0 {
		t.Fatalf("pid %d not found among kubelets", cmd.Process.Pid)
	}
	if d := time.Since(me.Started); d < -2*time.Second || d > 30*time.Second {
		t.Errorf("started %s ago, want just now", d)
	}
	def := HealthCheck(HealthDeps{FS: hostFS, Processes: onlyPID{procs, me.PID}})
	def.Settings.(*HealthSettings).Cooldown = 0
	run := func() check.Finding {
		t.Helper()
		fs, err := def.Check.Run(context.Background())
		if err != nil || len(fs) != 1 {
			t.Fatalf("run: %v %v", fs, err)
		}
		return fs[0]
	}
	want(t, run(), check.SeverityOK, ReasonHealthy)
	if hits != 1 {
		t.Errorf("healthz asked %d times", hits)
	}
	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitState(t, procs, me.PID, 'T')
	want(t, run(), check.SeverityProblem, ReasonUnhealthy, "stopped")
	if err := cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitState(t, procs, me.PID, 'S')
	want(t, run(), check.SeverityOK, ReasonHealthy)
	srv.Close()
	want(t, run(), check.SeverityProblem, ReasonUnhealthy, "connection refused")
}

type onlyPID struct {
	p   ProcFS
	pid int
}

func (o onlyPID) Kubelets(ctx context.Context) ([]Process, error) {
	ps, err := o.p.Kubelets(ctx)
	var out []Process
	for _, p := range ps {
		if p.PID == o.pid {
			out = append(out, p)
		}
	}
	return out, err
}

func mustKubelets(t *testing.T, p ProcFS) []Process {
	t.Helper()
	ps, err := p.Kubelets(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

func waitState(t *testing.T, p ProcFS, pid int, state byte) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		for _, pr := range mustKubelets(t, p) {
			if pr.PID == pid && pr.State == state {
				return
			}
		}
	}
	t.Fatalf("pid %d never in state %c", pid, state)
}
