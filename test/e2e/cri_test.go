//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/node-doctor/node-doctor/pkg/check"
	"github.com/node-doctor/node-doctor/pkg/cri"
	"github.com/node-doctor/node-doctor/test/harness"
)

const criNamespace = "cri-e2e"

// TestCriRealContainerd creates, over CRI on a real containerd with runc and
// the bridge CNI, the pods the runtime checks are about — acting as kubelet
// would, restarts included — and asserts each finding; then hangs and stops
// containerd and asserts the runtime finding and the recovery.
func TestCriRealContainerd(t *testing.T) {
	harness.RequireRoot(t)
	waitForFreeHarness(t, 15*time.Minute)
	c := harness.StartContainerdT(t, harness.ContainerdOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	conn, err := harness.DialCRI(ctx, c.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	p := &criPods{t: t, rs: runtimeapi.NewRuntimeServiceClient(conn), logDir: filepath.Join(filepath.Dir(c.Address), "pod-logs")}

	// The node: one pod per finding, and a healthy one.
	p.loop(ctx, "crash", []string{"sleep", "a"}, 3)
	p.loop(ctx, "exit-zero", []string{"sh", "-c", "echo 'starting server in the background'; (sleep 3600 &); exit 0"}, 3)
	oom := p.sandbox(ctx, "oom")
	mem := int64(16 << 20)
	id := p.start(ctx, oom, "hog", 0, harness.BusyboxImage, []string{"dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"},
		&runtimeapi.LinuxContainerResources{MemoryLimitInBytes: mem, MemorySwapLimitInBytes: mem})
	if st := p.waitExited(ctx, id); st.Reason != "OOMKilled" {
		t.Logf("containerd says the hog ended with %d %q (want OOMKilled)", st.ExitCode, st.Reason)
	}
	missing := p.sandbox(ctx, "missing-image")
	if _, err := p.create(ctx, missing, "app", 0, "localhost/node-doctor/does-not-exist:e2e", []string{"true"}, nil); err == nil {
		t.Fatal("creating a container from a missing image succeeded")
	}
	stuck := p.sandbox(ctx, "stuck")
	if _, err := p.create(ctx, stuck, "never-started", 0, harness.BusyboxImage, []string{"true"}, nil); err != nil {
		t.Fatal(err)
	}
	healthy := p.sandbox(ctx, "healthy")
	p.start(ctx, healthy, "web", 0, harness.BusyboxImage, []string{"sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"}, nil)
	time.Sleep(3 * time.Second) // let the empty and the stuck pass their thresholds

	src, defs := criChecks(c.Endpoint)
	got := runCriChecks(ctx, t, src, defs)
	expect := []struct{ check, reason, pod, container string }{
		{"cri-runtime", "RuntimeResponding", "", ""},
		{"cri-runtime-ready", "RuntimeReady", "", ""},
		{"cri-network-ready", "NetworkReady", "", ""},
		{"cri-sandbox-image", "SandboxImagePresent", "", ""},
		{"cri-crash-loop", "CrashLoop", "crash", "app"},
		{"cri-restart-loop", "StartBackgroundMistake", "exit-zero", "app"},
		{"cri-oom-killed", "OOMKilled", "oom", "hog"},
		{"cri-sandboxes", "SandboxWithoutContainers", "missing-image", ""},
		{"cri-stuck-containers", "ContainerStuckCreated", "stuck", "never-started"},
	}
	for _, e := range expect {
		f := findFinding(got[e.check], e.reason, e.pod)
		if f == nil {
			t.Errorf("%s: no %s finding for pod %q; got %s", e.check, e.reason, e.pod, describe(got[e.check]))
			continue
		}
		if e.pod != "" && (f.Object.Namespace != criNamespace || f.Object.UID != "uid-"+e.pod || f.Object.Container != e.container) {
			t.Errorf("%s %s: object %+v", e.check, e.reason, f.Object)
		}
		t.Logf("%s %s %s: %s", f.Severity, e.check, f.Object, f.Message)
	}
	if f := findFinding(got["cri-crash-loop"], "CrashLoop", "crash"); f != nil {
		if f.Details["exit_code"] != "1" || f.Details["attempt"] != "2" || !strings.Contains(f.Details["log_tail"], "invalid number 'a'") {
			t.Errorf("crash loop details: %v", f.Details)
		}
	}
	for name, fs := range got {
		for _, f := range fs {
			if f.Object.Name == "healthy" && f.Severity != check.SeverityOK {
				t.Errorf("%s flags the healthy pod: %s %s", name, f.Reason, f.Message)
			}
		}
	}

	if dir := os.Getenv("ND_CRI_CAPTURE"); dir != "" {
		captureCRI(ctx, t, p.rs, dir, got)
	}

	// The same through the binary, as an operator runs it.
	agent := buildAgent(t)
	rep, code := runAgentCRI(ctx, t, agent, c.Endpoint)
	if code != 1 || !strings.Contains(rep, `"CrashLoop"`) || !strings.Contains(rep, `"StartBackgroundMistake"`) || !strings.Contains(rep, `"OOMKilled"`) {
		t.Errorf("node-doctor check: exit %d, report:\n%s", code, rep)
	}
	explainPods(ctx, t, agent, c.Endpoint)

	// CNI config gone: containerd reports NetworkReady=false.
	confDir := filepath.Join(filepath.Dir(c.Address), "net.d")
	conf := filepath.Join(confDir, "10-bridge.conflist")
	if err := os.Rename(conf, conf+".off"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Rename(conf+".off", conf) })
	f := waitFinding(ctx, t, src, defs, "cri-network-ready", "NetworkNotReady", 30*time.Second)
	if f.Condition != check.ConditionNetworkConfig || !strings.Contains(f.Message, confDir+" holds no .conf/.conflist file") {
		t.Errorf("CNI config removed: %s %s", f.Reason, f.Message)
	}
	t.Logf("%s: %s", f.Reason, f.Message)
	if err := os.Rename(conf+".off", conf); err != nil {
		t.Fatal(err)
	}
	waitFinding(ctx, t, src, defs, "cri-network-ready", "NetworkReady", 30*time.Second)

	// Pause image gone from the image store.
	if out, err := exec.CommandContext(ctx, "ctr", "--address", c.Address, "-n", "k8s.io", "images", "rm", harness.PauseImage).CombinedOutput(); err != nil {
		t.Fatalf("ctr images rm: %v: %s", err, out)
	}
	f = waitFinding(ctx, t, src, defs, "cri-sandbox-image", "SandboxImageMissing", 10*time.Second)
	if f.Severity != check.SeverityProblem || !strings.Contains(f.Message, harness.PauseImage) {
		t.Errorf("pause image removed: %s %s %s", f.Severity, f.Reason, f.Message)
	}
	t.Logf("%s: %s", f.Reason, f.Message)
	for _, spec := range harness.DefaultImages() {
		if spec.Ref != harness.PauseImage {
			continue
		}
		path, err := harness.BuildImage(filepath.Join(filepath.Dir(c.Address), "images"), spec)
		if err != nil {
			t.Fatal(err)
		}
		if err := harness.ImportImage(ctx, c.Address, path); err != nil {
			t.Fatal(err)
		}
	}
	waitFinding(ctx, t, src, defs, "cri-sandbox-image", "SandboxImagePresent", 10*time.Second)

	// Hung: containerd frozen, calls time out.
	pid := c.Proc.Pid
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
	if f := runtimeFinding(ctx, t, src, defs); f.Reason != "RuntimeUnresponsive" || f.Condition != check.ConditionContainerRuntime {
		t.Errorf("frozen containerd: %s %s", f.Reason, f.Message)
	} else {
		t.Logf("frozen containerd: %s: %s", f.Reason, f.Message)
	}
	_ = syscall.Kill(pid, syscall.SIGCONT)
	if f := waitRuntime(ctx, t, src, defs, "RuntimeResponding", 30*time.Second); f.Reason != "RuntimeResponding" {
		t.Errorf("thawed containerd: %s %s", f.Reason, f.Message)
	}

	// Stopped: containerd gone, then started again on the same socket.
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); c.Proc.Alive() && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
	}
	if f := runtimeFinding(ctx, t, src, defs); f.Reason != "RuntimeUnreachable" {
		t.Errorf("stopped containerd: %s %s", f.Reason, f.Message)
	} else {
		t.Logf("stopped containerd: %s: %s", f.Reason, f.Message)
	}
	restartContainerd(t, c)
	if f := waitRuntime(ctx, t, src, defs, "RuntimeResponding", 60*time.Second); f.Reason != "RuntimeResponding" {
		t.Fatalf("restarted containerd: %s %s", f.Reason, f.Message)
	}
	// containerd answers before it has recovered every sandbox and task.
	start := time.Now()
	for {
		got = runCriChecks(ctx, t, src, defs)
		if findFinding(got["cri-crash-loop"], "CrashLoop", "crash") != nil {
			t.Logf("crash loop seen again %s after containerd answered", time.Since(start).Round(100*time.Millisecond))
			break
		}
		if time.Since(start) > 30*time.Second {
			t.Errorf("after the restart the crash loop is not seen: %s", describe(got["cri-crash-loop"]))
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// waitForFreeHarness waits while another harness node (or anything owning
// cni0) runs: only one can run on this machine.
func waitForFreeHarness(t *testing.T, max time.Duration) {
	t.Helper()
	deadline := time.Now().Add(max)
	for {
		_, err := net.InterfaceByName(harness.BridgeName)
		active := harness.ActiveWorkDir()
		if err != nil && active == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Skipf("another harness node is running (work dir %q, %s present: %v); not fighting it", active, harness.BridgeName, err == nil)
		}
		t.Logf("waiting for the harness node in %q to finish", active)
		time.Sleep(15 * time.Second)
	}
}

// criPods creates pods and containers over CRI the way kubelet labels them.
type criPods struct {
	t      *testing.T
	rs     runtimeapi.RuntimeServiceClient
	logDir string
}

type criSandbox struct {
	id  string
	cfg *runtimeapi.PodSandboxConfig
}

func (p *criPods) sandbox(ctx context.Context, name string) criSandbox {
	p.t.Helper()
	uid := "uid-" + name
	cfg := &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: name, Namespace: criNamespace, Uid: uid},
		Hostname: name,
		Labels: map[string]string{
			cri.LabelPodNamespace: criNamespace, cri.LabelPodName: name, cri.LabelPodUID: uid,
		},
		LogDirectory: filepath.Join(p.logDir, name),
		// Under kubepods, which the harness removes on teardown.
		Linux: &runtimeapi.LinuxPodSandboxConfig{CgroupParent: "/kubepods/" + criNamespace + "-" + name},
	}
	r, err := p.rs.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		p.t.Fatalf("run sandbox %s: %v", name, err)
	}
	return criSandbox{r.PodSandboxId, cfg}
}

func (p *criPods) create(ctx context.Context, sb criSandbox, name string, attempt uint32, image string, cmd []string, res *runtimeapi.LinuxContainerResources) (string, error) {
	labels := map[string]string{cri.LabelContainerName: name}
	for k, v := range sb.cfg.Labels {
		labels[k] = v
	}
	r, err := p.rs.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
		PodSandboxId: sb.id, SandboxConfig: sb.cfg,
		Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: name, Attempt: attempt},
			Image:    &runtimeapi.ImageSpec{Image: image},
			Command:  cmd,
			Labels:   labels,
			LogPath:  fmt.Sprintf("%s/%d.log", name, attempt),
			Linux:    &runtimeapi.LinuxContainerConfig{Resources: res},
		},
	})
	if err != nil {
		return "", fmt.Errorf("create container %s/%s: %w", sb.cfg.Metadata.Name, name, err)
	}
	return r.ContainerId, nil
}

func (p *criPods) start(ctx context.Context, sb criSandbox, name string, attempt uint32, image string, cmd []string, res *runtimeapi.LinuxContainerResources) string {
	p.t.Helper()
	id, err := p.create(ctx, sb, name, attempt, image, cmd, res)
	if err != nil {
		p.t.Fatal(err)
	}
	if _, err := p.rs.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
		p.t.Fatalf("start container %s: %v", name, err)
	}
	return id
}

func (p *criPods) waitExited(ctx context.Context, id string) *runtimeapi.ContainerStatus {
	p.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		r, err := p.rs.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
		if err != nil {
			p.t.Fatalf("container status %s: %v", id, err)
		}
		if r.Status.State == runtimeapi.ContainerState_CONTAINER_EXITED {
			return r.Status
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("container %s still %s after 60s", r.Status.Metadata.Name, r.Status.State)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// loop runs container "app" of a new pod attempts times, each started after
// the previous exited, as kubelet restarts a container.
func (p *criPods) loop(ctx context.Context, pod string, cmd []string, attempts int) {
	p.t.Helper()
	sb := p.sandbox(ctx, pod)
	for a := range attempts {
		st := p.waitExited(ctx, p.start(ctx, sb, "app", uint32(a), harness.BusyboxImage, cmd, nil))
		p.t.Logf("pod %s attempt %d: exit %d %s", pod, a, st.ExitCode, st.Reason)
	}
}

func criChecks(endpoint string) (*cri.Source, []check.Definition) {
	client := cri.NewClient(cri.ClientOptions{
		Endpoints: cri.EndpointOptions{RuntimeEndpoint: endpoint, HostFS: os.DirFS("/")},
		Dial:      cri.UnixDialer("/"),
		Timeout:   2 * time.Second,
	})
	src := cri.NewSource(client, cri.SourceOptions{MaxAge: time.Millisecond})
	hostFS := os.DirFS("/")
	defs := []check.Definition{
		cri.RuntimeCheck(src), cri.RuntimeReadyCheck(src), cri.NetworkReadyCheck(src, hostFS), cri.SandboxImageCheck(src),
		cri.CrashLoopCheck(src, hostFS, nil), cri.RestartLoopCheck(src, nil), cri.OOMKilledCheck(src), cri.SandboxCheck(src, nil), cri.StuckCheck(src),
	}
	for _, d := range defs {
		switch s := d.Settings.(type) {
		case *cri.SandboxSettings:
			s.EmptyAfter = 2 * time.Second
		case *cri.StuckSettings:
			s.After = 2 * time.Second
		}
	}
	return src, defs
}

func runCriChecks(ctx context.Context, t *testing.T, src *cri.Source, defs []check.Definition) map[string][]check.Finding {
	t.Helper()
	src.Invalidate()
	out := map[string][]check.Finding{}
	for _, d := range defs {
		f, err := d.Check.Run(ctx)
		if err != nil {
			t.Errorf("%s could not run: %v", d.Name, err)
		}
		out[d.Name] = f
	}
	return out
}

func runtimeFinding(ctx context.Context, t *testing.T, src *cri.Source, defs []check.Definition) check.Finding {
	t.Helper()
	src.Invalidate()
	f, err := defs[0].Check.Run(ctx)
	if err != nil || len(f) == 0 {
		t.Fatalf("cri-runtime: %v %v", err, f)
	}
	return f[0]
}

func waitRuntime(ctx context.Context, t *testing.T, src *cri.Source, defs []check.Definition, reason string, max time.Duration) check.Finding {
	t.Helper()
	start := time.Now()
	for {
		f := runtimeFinding(ctx, t, src, defs)
		if f.Reason == reason || time.Since(start) > max {
			t.Logf("cri-runtime %s after %s", f.Reason, time.Since(start).Round(100*time.Millisecond))
			return f
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func findFinding(fs []check.Finding, reason, pod string) *check.Finding {
	for i := range fs {
		if fs[i].Reason == reason && (pod == "" || fs[i].Object.Name == pod) {
			return &fs[i]
		}
	}
	return nil
}

func describe(fs []check.Finding) string {
	var b strings.Builder
	for _, f := range fs {
		fmt.Fprintf(&b, "\n  %s %s %s: %s", f.Severity, f.Reason, f.Object, f.Message)
	}
	return b.String()
}

// runAgentCRI runs the binary's CRI checks against the test's containerd.
func runAgentCRI(ctx context.Context, t *testing.T, bin, endpoint string) (string, int) {
	t.Helper()
	cmd := exec.CommandContext(ctx, bin, "check", "-o", "json", "--runtime-endpoint", endpoint,
		"--only", "cri-runtime,cri-runtime-ready,cri-network-ready,cri-sandbox-image,cri-crash-loop,cri-restart-loop,cri-oom-killed,cri-sandboxes,cri-stuck-containers")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	code := 0
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run node-doctor: %v", err)
	}
	if !json.Valid(stdout.Bytes()) {
		t.Errorf("node-doctor check -o json: not JSON; stderr:\n%s", stderr.String())
	}
	return stdout.String(), code
}

// restartContainerd starts containerd again with the harness's config, as
// systemd would after a crash, and stops it (after removing the test's
// sandboxes) before the harness tears the rest down.
func restartContainerd(t *testing.T, c *harness.Containerd) {
	t.Helper()
	dir := filepath.Dir(c.Address)
	logf, err := os.OpenFile(filepath.Join(dir, "containerd-restarted.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command("containerd", "--config", filepath.Join(dir, "config.toml"))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("restart containerd: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if conn, err := harness.DialCRI(ctx, c.Endpoint); err == nil {
			rs := runtimeapi.NewRuntimeServiceClient(conn)
			if l, err := rs.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{}); err == nil {
				for _, sb := range l.Items {
					_, _ = rs.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.Id})
					_, _ = rs.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.Id})
				}
			}
			conn.Close()
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
}

// captureCRI writes what real containerd reported, for pkg/cri's testdata
// (ND_CRI_CAPTURE=dir).
func captureCRI(ctx context.Context, t *testing.T, rs runtimeapi.RuntimeServiceClient, dir string, got map[string][]check.Finding) {
	t.Helper()
	st, err := rs.Status(ctx, &runtimeapi.StatusRequest{Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.MarshalIndent(st.Info, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{"containerd-1.6-status-info.json": b}
	if f := findFinding(got["cri-crash-loop"], "CrashLoop", "crash"); f != nil {
		if b, err := os.ReadFile(f.Details["log_path"]); err == nil {
			files["containerd-1.6-crash.log"] = b
		}
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// waitFinding reruns one check until its first finding has the reason.
func waitFinding(ctx context.Context, t *testing.T, src *cri.Source, defs []check.Definition, name, reason string, max time.Duration) check.Finding {
	t.Helper()
	var def *check.Definition
	for i := range defs {
		if defs[i].Name == name {
			def = &defs[i]
		}
	}
	start := time.Now()
	for {
		src.Invalidate()
		fs, err := def.Check.Run(ctx)
		if err == nil && len(fs) > 0 && fs[0].Reason == reason {
			return fs[0]
		}
		if time.Since(start) > max {
			t.Fatalf("%s: no %s after %s: %v %s", name, reason, max, err, describe(fs))
		}
		time.Sleep(250 * time.Millisecond)
	}
}
