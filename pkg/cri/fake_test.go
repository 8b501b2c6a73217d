package cri

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	critest "k8s.io/cri-api/pkg/apis/testing"

	"github.com/node-doctor/node-doctor/pkg/check"
)

// fakeRuntime is the cri-api fake runtime and image service together; it
// satisfies Runtime directly, and fakeServer serves it over a socket.
type fakeRuntime struct {
	*critest.FakeRuntimeService
	*critest.FakeImageService
}

func newFakeRuntime() fakeRuntime {
	rt := fakeRuntime{critest.NewFakeRuntimeService(), critest.NewFakeImageService()}
	rt.FakeStatus = &runtimeapi.RuntimeStatus{Conditions: []*runtimeapi.RuntimeCondition{
		{Type: "RuntimeReady", Status: true}, {Type: "NetworkReady", Status: true},
	}}
	return rt
}

// rtServer and imgServer adapt the fakes to the gRPC services.
type rtServer struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	f *critest.FakeRuntimeService
	// info is returned as the verbose Status info.
	info map[string]string
}

func (s *rtServer) Version(ctx context.Context, r *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return s.f.Version(ctx, r.Version)
}

func (s *rtServer) Status(ctx context.Context, r *runtimeapi.StatusRequest) (*runtimeapi.StatusResponse, error) {
	st, err := s.f.Status(ctx, r.Verbose)
	if err == nil && r.Verbose {
		st.Info = s.info
	}
	return st, err
}

func (s *rtServer) ListPodSandbox(ctx context.Context, r *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	items, err := s.f.ListPodSandbox(ctx, r.Filter)
	return &runtimeapi.ListPodSandboxResponse{Items: items}, err
}

func (s *rtServer) ListContainers(ctx context.Context, r *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	cs, err := s.f.ListContainers(ctx, r.Filter)
	return &runtimeapi.ListContainersResponse{Containers: cs}, err
}

func (s *rtServer) ContainerStatus(ctx context.Context, r *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error) {
	return s.f.ContainerStatus(ctx, r.ContainerId, r.Verbose)
}

type imgServer struct {
	runtimeapi.UnimplementedImageServiceServer
	f *critest.FakeImageService
}

func (s *imgServer) ListImages(ctx context.Context, r *runtimeapi.ListImagesRequest) (*runtimeapi.ListImagesResponse, error) {
	imgs, err := s.f.ListImages(ctx, r.Filter)
	return &runtimeapi.ListImagesResponse{Images: imgs}, err
}

func (s *imgServer) ImageStatus(ctx context.Context, r *runtimeapi.ImageStatusRequest) (*runtimeapi.ImageStatusResponse, error) {
	return s.f.ImageStatus(ctx, r.Image, r.Verbose)
}

func (s *imgServer) ImageFsInfo(ctx context.Context, _ *runtimeapi.ImageFsInfoRequest) (*runtimeapi.ImageFsInfoResponse, error) {
	return s.f.ImageFsInfo(ctx)
}

// fakeServer serves a fakeRuntime on a real unix socket under a host root.
type fakeServer struct {
	rt   fakeRuntime
	root string // host root
	sock string // socket path relative to root
	srv  *grpc.Server
	info map[string]string

	mu   sync.Mutex
	hang map[string]bool // short method names whose calls block until the caller gives up
}

// newRoot returns a short host root directory (unix socket paths are limited
// to 108 bytes, too short for t.TempDir under long test names).
func newRoot(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "cri")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func serveFake(t testing.TB, root, sock string, rt fakeRuntime) *fakeServer {
	t.Helper()
	fs := &fakeServer{rt: rt, root: root, sock: sock, hang: map[string]bool{}}
	fs.start(t)
	t.Cleanup(fs.stop)
	return fs
}

func (s *fakeServer) start(t testing.TB) {
	t.Helper()
	p := filepath.Join(s.root, s.sock)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	_ = os.Remove(p)
	l, err := net.Listen("unix", p)
	if err != nil {
		t.Fatal(err)
	}
	s.srv = grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		m := info.FullMethod[strings.LastIndexByte(info.FullMethod, '/')+1:]
		s.mu.Lock()
		hang := s.hang[m]
		s.mu.Unlock()
		if hang {
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return h(ctx, req)
	}))
	runtimeapi.RegisterRuntimeServiceServer(s.srv, &rtServer{f: s.rt.FakeRuntimeService, info: s.info})
	runtimeapi.RegisterImageServiceServer(s.srv, &imgServer{f: s.rt.FakeImageService})
	go func() { _ = s.srv.Serve(l) }()
}

func (s *fakeServer) stop() {
	if s.srv != nil {
		s.srv.Stop()
		s.srv = nil
	}
}

func (s *fakeServer) setHang(method string, on bool) {
	s.mu.Lock()
	s.hang[method] = on
	s.mu.Unlock()
}

// client returns a client that resolves endpoints under the server's root.
func (s *fakeServer) client(o ClientOptions) *Client {
	o.Endpoints.HostFS = os.DirFS(s.root)
	o.Dial = UnixDialer(s.root)
	return NewClient(o)
}

// staticSource hands checks a fixed snapshot or error.
type staticSource struct {
	s   *Snapshot
	err error
}

func (s staticSource) Snapshot(context.Context) (*Snapshot, error) { return s.s, s.err }

// Builders for fake pods and containers the way kubelet labels them.

var t0 = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

func sandbox(id, ns, name string, ready bool, created time.Time) *critest.FakePodSandbox {
	st := runtimeapi.PodSandboxState_SANDBOX_READY
	if !ready {
		st = runtimeapi.PodSandboxState_SANDBOX_NOTREADY
	}
	uid := "uid-" + ns + "-" + name
	return &critest.FakePodSandbox{PodSandboxStatus: runtimeapi.PodSandboxStatus{
		Id:        id,
		Metadata:  &runtimeapi.PodSandboxMetadata{Name: name, Namespace: ns, Uid: uid},
		State:     st,
		CreatedAt: created.UnixNano(),
		Labels:    map[string]string{LabelPodNamespace: ns, LabelPodName: name, LabelPodUID: uid},
	}}
}

type ctr struct {
	id, sandbox, name string
	attempt           uint32
	state             runtimeapi.ContainerState
	exit              int32
	reason, message   string
	created, finished time.Time
	logPath           string
	memLimit          int64
}

func (c ctr) fake(sb *critest.FakePodSandbox) *critest.FakeContainer {
	if c.created.IsZero() {
		c.created = t0
	}
	labels := map[string]string{LabelContainerName: c.name}
	if sb != nil {
		for _, k := range []string{LabelPodNamespace, LabelPodName, LabelPodUID} {
			labels[k] = sb.Labels[k]
		}
	}
	fc := &critest.FakeContainer{SandboxID: c.sandbox, ContainerStatus: runtimeapi.ContainerStatus{
		Id:        c.id,
		Metadata:  &runtimeapi.ContainerMetadata{Name: c.name, Attempt: c.attempt},
		State:     c.state,
		CreatedAt: c.created.UnixNano(),
		StartedAt: c.created.Add(time.Second).UnixNano(),
		ExitCode:  c.exit,
		Reason:    c.reason,
		Message:   c.message,
		Image:     &runtimeapi.ImageSpec{Image: "registry.example/app:1"},
		ImageRef:  "sha256:abc",
		Labels:    labels,
		LogPath:   c.logPath,
		Resources: &runtimeapi.ContainerResources{Linux: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: c.memLimit}},
	}}
	if !c.finished.IsZero() {
		fc.FinishedAt = c.finished.UnixNano()
	}
	return fc
}

// fakeClock is a PassiveClock for Sources under test.
type fakeClock struct{ now time.Time }

func (c *fakeClock) Now() time.Time                  { return c.now }
func (c *fakeClock) Since(t time.Time) time.Duration { return c.now.Sub(t) }

func mustSnapshot(t testing.TB, rt Runtime, now time.Time) *Snapshot {
	t.Helper()
	s, err := NewSource(rt, SourceOptions{Clock: &fakeClock{now}}).Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// agentSnapshot is the snapshot at now of a Source that took its first one
// at first, as the agent's does from round to round.
func agentSnapshot(t testing.TB, rt Runtime, first, now time.Time) *Snapshot {
	t.Helper()
	clk := &fakeClock{first}
	src := NewSource(rt, SourceOptions{Clock: clk})
	if _, err := src.Snapshot(context.Background()); err != nil {
		t.Fatal(err)
	}
	clk.now = now
	s, err := src.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// reasons renders findings compactly for comparison.
func reasons(fs []check.Finding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, fmt.Sprintf("%s %s %s", f.Severity, f.Reason, f.Object))
	}
	return out
}
