package harness

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"
)

// TestLogger returns a slog.Logger writing through t.Log.
func TestLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// RequireRoot skips the test, saying why, unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("real-node e2e test: needs root to run containerd, kubelet and kube-proxy (run: sudo make e2e)")
	}
}

// BusyWait bounds how long StartT and StartContainerdT wait for another
// harness node on this host (another test binary, make cluster-up) to stop.
var BusyWait = 15 * time.Minute

func waitNotBusy(t testing.TB, start func() error) error {
	t.Helper()
	deadline := time.Now().Add(BusyWait)
	for {
		err := start()
		if !errors.Is(err, ErrBusy) || time.Now().After(deadline) {
			return err
		}
		t.Logf("waiting for the other harness node to stop: %v", err)
		time.Sleep(10 * time.Second)
	}
}

// StartT starts a node for a test: skips when not root, fails (never skips)
// when the node cannot come up, and registers teardown. When the test
// failed, teardown prints every component's log tail and keeps the work dir.
func StartT(t testing.TB, opts Options) *Cluster {
	t.Helper()
	RequireRoot(t)
	log := TestLogger(t)
	var c *Cluster
	err := waitNotBusy(t, func() (err error) {
		c, err = Start(context.Background(), log, opts)
		return err
	})
	if err != nil {
		t.Fatalf("start node: %v", err)
	}
	t.Cleanup(func() {
		failed := t.Failed()
		if failed {
			t.Logf("component logs (tails) from %s:\n%s", c.WorkDir, c.LogTails(60))
		}
		// Normally seconds; a scale test leaves 170,000 rules and a hundred pods.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		if err := c.Stop(ctx, failed); err != nil {
			t.Errorf("tear down node: %v", err)
		}
	})
	return c
}

// StartContainerdT starts a standalone containerd for CRI tests.
func StartContainerdT(t testing.TB, opts ContainerdOptions) *Containerd {
	t.Helper()
	RequireRoot(t)
	log := TestLogger(t)
	var c *Containerd
	err := waitNotBusy(t, func() (err error) {
		c, err = StartContainerd(context.Background(), log, opts)
		return err
	})
	if err != nil {
		t.Fatalf("start containerd: %v", err)
	}
	t.Cleanup(func() {
		failed := t.Failed()
		if failed {
			t.Logf("containerd log tail (%s):\n%s", c.Proc.LogPath, Tail(c.Proc.LogPath, 60))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := Teardown(ctx, log, c.state, failed); err != nil {
			t.Errorf("tear down containerd: %v", err)
		}
	})
	return c
}
