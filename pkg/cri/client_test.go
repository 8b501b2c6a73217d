package cri

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	critest "k8s.io/cri-api/pkg/apis/testing"

	"github.com/node-doctor/node-doctor/pkg/check"
)

const containerdSock = "run/containerd/containerd.sock"

func TestClientFindsDefaultSocket(t *testing.T) {
	root := newRoot(t)
	rt := newFakeRuntime()
	rt.SetFakeSandboxes([]*critest.FakePodSandbox{sandbox("sb1", "default", "web", true, t0)})
	srv := serveFake(t, root, containerdSock, rt)
	c := srv.client(ClientOptions{})
	defer c.Close()
	s, err := NewSource(c, SourceOptions{}).Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if s.Endpoint != "unix:///run/containerd/containerd.sock" || s.Version.GetRuntimeName() != critest.FakeRuntimeName || len(s.Sandboxes) != 1 {
		t.Errorf("snapshot: endpoint %q version %v sandboxes %d", s.Endpoint, s.Version, len(s.Sandboxes))
	}
}

// A stale containerd socket nobody listens on must not hide a CRI-O that
// answers, as crictl picks the first default endpoint that connects.
func TestClientSkipsDeadDefaultSocket(t *testing.T) {
	root := newRoot(t)
	dead := filepath.Join(root, containerdSock)
	if err := os.MkdirAll(filepath.Dir(dead), 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", dead)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	srv := serveFake(t, root, "run/crio/crio.sock", newFakeRuntime())
	c := srv.client(ClientOptions{Timeout: time.Second})
	defer c.Close()
	if _, err := c.Version(context.Background(), "v1"); err != nil {
		t.Fatal(err)
	}
	if c.Endpoint() != "unix:///run/crio/crio.sock" {
		t.Errorf("endpoint %q", c.Endpoint())
	}
}

func TestNoRuntimeIsNotApplicable(t *testing.T) {
	root := newRoot(t)
	c := NewClient(ClientOptions{Endpoints: EndpointOptions{HostFS: os.DirFS(root)}, Dial: UnixDialer(root)})
	src := NewSource(c, SourceOptions{})
	_, err := src.Snapshot(context.Background())
	var nr *NoRuntimeError
	if !errors.As(err, &nr) || len(nr.Tried) != 3 || !strings.Contains(err.Error(), "/run/crio/crio.sock") {
		t.Fatalf("err %v", err)
	}
	for _, def := range allChecks(src, os.DirFS(root)) {
		_, err := def.Check.Run(context.Background())
		if _, ok := check.IsNotApplicable(err); !ok {
			t.Errorf("%s: %v, want not applicable", def.Name, err)
		}
	}
	// Configured but absent is a problem, not "no runtime here".
	c = NewClient(ClientOptions{Endpoints: EndpointOptions{RuntimeEndpoint: "unix:///run/containerd/containerd.sock", HostFS: os.DirFS(root)}, Dial: UnixDialer(root)})
	f, err := RuntimeCheck(NewSource(c, SourceOptions{})).Check.Run(context.Background())
	if err != nil || len(f) != 1 || f[0].Reason != "RuntimeUnreachable" || !strings.Contains(f[0].Message, "--runtime-endpoint") {
		t.Errorf("explicit endpoint without socket: %v %+v", err, f)
	}
}

func allChecks(src Snapshotter, hostFS fs.FS) []check.Definition {
	return []check.Definition{
		RuntimeCheck(src), RuntimeReadyCheck(src), NetworkReadyCheck(src, hostFS), SandboxImageCheck(src),
		CrashLoopCheck(src, hostFS, nil), RestartLoopCheck(src, nil), OOMKilledCheck(src), SandboxCheck(src, nil), StuckCheck(src),
	}
}

func TestHungRuntimeTimesOut(t *testing.T) {
	root := newRoot(t)
	srv := serveFake(t, root, containerdSock, newFakeRuntime())
	srv.setHang("Version", true)
	c := srv.client(ClientOptions{Timeout: 300 * time.Millisecond})
	defer c.Close()
	src := NewSource(c, SourceOptions{})
	start := time.Now()
	f, err := RuntimeCheck(src).Check.Run(context.Background())
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("hung runtime took %s to report", d)
	}
	if err != nil || len(f) != 1 || f[0].Reason != "RuntimeUnresponsive" || f[0].Condition != check.ConditionContainerRuntime || !strings.Contains(f[0].Message, "300ms") {
		t.Fatalf("%v %+v", err, f)
	}
	// The other checks share the failed snapshot instead of each waiting.
	start = time.Now()
	_, err = CrashLoopCheck(src, nil, nil).Check.Run(context.Background())
	if err == nil || time.Since(start) > 100*time.Millisecond {
		t.Errorf("crash-loop check on a hung runtime: %v after %s", err, time.Since(start))
	}
	// Recovery.
	srv.setHang("Version", false)
	src.Invalidate()
	f, err = RuntimeCheck(src).Check.Run(context.Background())
	if err != nil || f[0].Reason != "RuntimeResponding" {
		t.Fatalf("after recovery: %v %+v", err, f)
	}
}

// One hung call per container must not cost one timeout per container.
func TestHungContainerStatusFailsFast(t *testing.T) {
	root := newRoot(t)
	rt := newFakeRuntime()
	sb := sandbox("sb", "ns", "p", true, t0)
	rt.SetFakeSandboxes([]*critest.FakePodSandbox{sb})
	var cs []*critest.FakeContainer
	for i := range 200 {
		cs = append(cs, ctr{id: fmt.Sprintf("c%d", i), sandbox: "sb", name: fmt.Sprintf("c%d", i), state: runtimeapi.ContainerState_CONTAINER_EXITED}.fake(sb))
	}
	rt.SetFakeContainers(cs)
	srv := serveFake(t, root, containerdSock, rt)
	srv.setHang("ContainerStatus", true)
	c := srv.client(ClientOptions{Timeout: 200 * time.Millisecond})
	defer c.Close()
	start := time.Now()
	f, err := RuntimeCheck(NewSource(c, SourceOptions{})).Check.Run(context.Background())
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %s", d)
	}
	if err != nil || len(f) != 2 || f[1].Reason != "RuntimeCallsFailing" || f[1].Severity != check.SeverityWarning {
		t.Fatalf("%v %s", err, reasons(f))
	}
}

func TestRuntimeErrors(t *testing.T) {
	root := newRoot(t)
	rt := newFakeRuntime()
	srv := serveFake(t, root, containerdSock, rt)
	c := srv.client(ClientOptions{})
	defer c.Close()
	src := NewSource(c, SourceOptions{})
	rt.FakeRuntimeService.InjectError("ListContainers", status.Error(codes.Internal, "boltdb: database not open"))
	f, err := RuntimeCheck(src).Check.Run(context.Background())
	if err != nil || f[0].Reason != "RuntimeErrors" || !strings.Contains(f[0].Message, "list containers") || !strings.Contains(f[0].Message, "database not open") {
		t.Fatalf("%v %+v", err, f)
	}
	_, err = OOMKilledCheck(src).Check.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "cri: list containers at unix:///run/containerd/containerd.sock") {
		t.Errorf("dependent check error: %v", err)
	}
	// Failing image calls leave a usable, partial snapshot.
	src.Invalidate()
	rt.FakeImageService.InjectError("ListImages", status.Error(codes.Unknown, "content store broken"))
	s, err := src.Snapshot(context.Background())
	if err != nil || len(s.Partial) != 1 {
		t.Fatalf("%v %v", err, s)
	}
	// A Status without conditions.
	rt.FakeStatus = &runtimeapi.RuntimeStatus{}
	src.Invalidate()
	s, err = src.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if f := runtimeReadyFindings(s); f[0].Reason != "RuntimeReadyMissing" {
		t.Errorf("%s", reasons(f))
	}
}

func TestReconnectAfterRuntimeRestart(t *testing.T) {
	root := newRoot(t)
	rt := newFakeRuntime()
	srv := serveFake(t, root, containerdSock, rt)
	c := srv.client(ClientOptions{Timeout: time.Second})
	defer c.Close()
	src := NewSource(c, SourceOptions{})
	run := func() check.Finding {
		t.Helper()
		src.Invalidate()
		f, err := RuntimeCheck(src).Check.Run(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return f[0]
	}
	if f := run(); f.Reason != "RuntimeResponding" {
		t.Fatalf("%+v", f)
	}
	srv.stop()
	if f := run(); f.Reason != "RuntimeUnreachable" {
		t.Fatalf("stopped runtime: %+v", f)
	}
	srv.start(t)
	start := time.Now()
	if f := run(); f.Reason != "RuntimeResponding" {
		t.Fatalf("restarted runtime: %+v", f)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("reconnect took %s", d)
	}
}

// Lists bigger than gRPC's default 4 MiB must work up to 16 MiB; beyond, the
// error says what failed.
func TestHugeLists(t *testing.T) {
	root := newRoot(t)
	rt := newFakeRuntime()
	pad := strings.Repeat("x", 400)
	mk := func(n int) {
		var sbs []*critest.FakePodSandbox
		for i := range n {
			sb := sandbox(fmt.Sprintf("sb%06d", i), "ns", fmt.Sprintf("p%06d", i), true, t0)
			sb.Annotations = map[string]string{"pad": pad}
			sbs = append(sbs, sb)
		}
		rt.SetFakeSandboxes(sbs)
	}
	srv := serveFake(t, root, containerdSock, rt)
	c := srv.client(ClientOptions{})
	defer c.Close()
	mk(15000) // about 8 MiB
	items, err := c.ListPodSandbox(context.Background(), nil)
	if err != nil || len(items) != 15000 {
		t.Fatalf("8 MiB list: %d items, %v", len(items), err)
	}
	mk(40000) // about 21 MiB
	_, err = c.ListPodSandbox(context.Background(), nil)
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "cri: list pod sandboxes") {
		t.Errorf("21 MiB list: %v", err)
	}
}

// Labels are whatever the runtime stores; missing or odd ones must still
// name something and never break a check.
func TestMalformedLabels(t *testing.T) {
	rt := newFakeRuntime()
	noLabels := sandbox("sb-nolabels", "ns", "from-metadata", true, t0)
	noLabels.Labels = nil
	empty := sandbox("sb-empty", "", "", true, t0)
	empty.Labels = map[string]string{LabelPodName: "", LabelPodNamespace: "\x00\n"}
	empty.Metadata = nil
	rt.SetFakeSandboxes([]*critest.FakePodSandbox{noLabels, empty})
	fin := t0.Add(-time.Minute)
	c1 := ctr{id: "c1", sandbox: "sb-nolabels", name: "app", attempt: 3, state: runtimeapi.ContainerState_CONTAINER_EXITED, exit: 1, reason: "Error", finished: fin}.fake(nil)
	c1.Labels = nil
	c2 := ctr{id: "c2", sandbox: "sb-empty", attempt: 4, state: runtimeapi.ContainerState_CONTAINER_EXITED, exit: 2, finished: fin}.fake(nil)
	c2.Metadata = nil
	c3 := ctr{id: "c3-orphan-with-a-long-id", sandbox: "sb-gone", name: "x", state: runtimeapi.ContainerState_CONTAINER_UNKNOWN}.fake(nil)
	rt.SetFakeContainers([]*critest.FakeContainer{c1, c2, c3})
	s := mustSnapshot(t, rt, t0.Add(time.Hour))
	set := defaultLoopSettings()
	set.Window = 2 * time.Hour
	got := reasons(crashLoopFindings(s, set, nil, nil))
	want := []string{"problem CrashLoop Pod ns/from-metadata container app"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("crash loops:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	got = reasons(stuckFindings(s, &StuckSettings{After: time.Minute}))
	if len(got) != 1 || got[0] != "problem ContainerStateUnknown Pod sandbox sb-gone container x" {
		t.Errorf("stuck: %q", got)
	}
	for _, def := range allChecks(staticSource{s: s}, nil) {
		if _, err := def.Check.Run(context.Background()); err != nil {
			t.Errorf("%s: %v", def.Name, err)
		}
	}
}

// The agent's host filesystem is an fs.FS without Stat, where opening a
// socket fails; the socket must still be found.
func TestClientFindsSocketThroughPlainFS(t *testing.T) {
	root := newRoot(t)
	serveFake(t, root, containerdSock, newFakeRuntime())
	c := NewClient(ClientOptions{Endpoints: EndpointOptions{HostFS: struct{ fs.FS }{os.DirFS(root)}}, Dial: UnixDialer(root)})
	defer c.Close()
	if _, err := c.Version(context.Background(), "v1"); err != nil || c.Endpoint() != "unix:///"+containerdSock {
		t.Fatalf("%v, endpoint %q", err, c.Endpoint())
	}
}
