package cri

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"testing/fstest"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	critest "k8s.io/cri-api/pkg/apis/testing"
)

// benchNode is a full node: 500 pods with 2 containers each, a tenth of
// them crash looping (an exited instance plus its running successor), over
// the fake runtime on a real socket.
func benchNode(tb testing.TB) (*fakeServer, fstest.MapFS, time.Time) {
	root := newRoot(tb)
	rt := newFakeRuntime()
	now := t0.Add(time.Hour)
	var sbs []*critest.FakePodSandbox
	var cs []*critest.FakeContainer
	hostFS := fstest.MapFS{}
	for i := range 500 {
		sb := sandbox(fmt.Sprintf("sb%04d", i), fmt.Sprintf("ns%02d", i%20), fmt.Sprintf("pod-%04d", i), true, t0)
		sbs = append(sbs, sb)
		for j, name := range []string{"app", "sidecar"} {
			c := ctr{id: fmt.Sprintf("c%04d-%d", i, j), sandbox: sb.Id, name: name, state: runtimeapi.ContainerState_CONTAINER_RUNNING}
			if i%10 == 0 && j == 0 {
				logPath := fmt.Sprintf("/var/log/pods/%s_%s/app/3.log", sb.Metadata.Namespace, sb.Metadata.Name)
				hostFS[hostPath(logPath)] = &fstest.MapFile{Data: []byte("2026-11-23T12:59:30.000000000Z stderr F fatal: config missing\n")}
				c.attempt, c.state, c.exit, c.reason, c.finished, c.logPath = 3, runtimeapi.ContainerState_CONTAINER_EXITED, 1, "Error", now.Add(-time.Minute), logPath
			}
			cs = append(cs, c.fake(sb))
		}
	}
	rt.SetFakeSandboxes(sbs)
	rt.SetFakeContainers(cs)
	rt.SetFakeImages([]string{"registry.example/app:1", "registry.k8s.io/pause:3.9"})
	srv := serveFake(tb, root, containerdSock, rt)
	return srv, hostFS, now
}

// BenchmarkSnapshotAndChecks is one round on a 500-pod/1000-container node:
// a cold snapshot (every ContainerStatus asked, no cache) and all nine CRI
// checks, over a real unix socket.
func BenchmarkSnapshotAndChecks(b *testing.B) {
	srv, hostFS, now := benchNode(b)
	c := srv.client(ClientOptions{})
	defer c.Close()
	ctx := context.Background()
	run := func(src *Source) {
		for _, def := range allChecks(src, hostFS) {
			f, err := def.Check.Run(ctx)
			if err != nil || len(f) == 0 {
				b.Fatalf("%s: %v", def.Name, err)
			}
		}
	}
	b.Run("cold", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			run(NewSource(c, SourceOptions{Clock: &fakeClock{now}}))
		}
	})
	b.Run("steady", func(b *testing.B) {
		// The agent's case: statuses of exited containers are cached.
		clk := &fakeClock{now}
		src := NewSource(c, SourceOptions{Clock: clk})
		run(src)
		b.ReportAllocs()
		for b.Loop() {
			clk.now = clk.now.Add(time.Minute)
			run(src)
		}
	})
}

// TestSnapshotHeap bounds the memory one round keeps alive.
func TestSnapshotHeap(t *testing.T) {
	if testing.Short() {
		t.Skip("measures a 1000-container snapshot")
	}
	srv, hostFS, now := benchNode(t)
	c := srv.client(ClientOptions{})
	defer c.Close()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	src := NewSource(c, SourceOptions{Clock: &fakeClock{now}})
	for _, def := range allChecks(src, hostFS) {
		if _, err := def.Check.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	extra := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("heap kept by one snapshot of 1000 containers: %d KiB", extra>>10)
	if extra > 20<<20 {
		t.Errorf("snapshot keeps %d MiB of heap, want < 20 MiB", extra>>20)
	}
	runtime.KeepAlive(src)
}
