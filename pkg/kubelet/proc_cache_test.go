package kubelet

import (
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"testing/fstest"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/node-doctor/node-doctor/pkg/host"
)

// countingFS counts the full process scans (ReadDir of proc).
type countingFS struct {
	fstest.MapFS
	scans int
}

func (c *countingFS) ReadDir(name string) ([]fs.DirEntry, error) {
	if name == "proc" {
		c.scans++
	}
	return c.MapFS.ReadDir(name)
}

func procStat(pid, comm string, state byte, start string) string {
	return pid + " (" + comm + ") " + string(state) + " 1 1 1 0 -1 4194560 100 0 0 0 10 5 0 0 20 0 12 0 " + start + " 100000 1000 18446744073709551615\n"
}

func TestKubeletFinderRemembers(t *testing.T) {
	m := fstest.MapFS{
		"proc/stat":      {Data: []byte("btime 1700000000\n")},
		"proc/uptime":    {Data: []byte("1000.00 100.00\n")},
		"proc/7/comm":    {Data: []byte("kubelet\n")},
		"proc/7/stat":    {Data: []byte(procStat("7", "kubelet", 'S', "5000"))},
		"proc/7/cmdline": {Data: []byte("/usr/bin/kubelet\x00--config=/var/lib/kubelet/config.yaml\x00")},
		"proc/9/comm":    {Data: []byte("containerd\n")},
		"proc/9/stat":    {Data: []byte(procStat("9", "containerd", 'S', "4000"))},
	}
	fsys := &countingFS{MapFS: m}
	clk := clocktesting.NewFakeClock(time.Now())
	f := NewKubeletFinder(fsys, clk)
	get := func() []Process {
		t.Helper()
		ps, err := f.Kubelets(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return ps
	}
	if ps := get(); len(ps) != 1 || ps[0].PID != 7 || fsys.scans != 1 {
		t.Fatalf("first: %+v after %d scans", ps, fsys.scans)
	}
	// Still running: no scan, and a state change is seen.
	m["proc/7/stat"] = &fstest.MapFile{Data: []byte(procStat("7", "kubelet", 'T', "5000"))}
	if ps := get(); len(ps) != 1 || !ps[0].Stopped() || fsys.scans != 1 {
		t.Fatalf("remembered: %+v after %d scans", ps, fsys.scans)
	}
	// The pid is reused by a new process (another start time): scanned.
	m["proc/7/stat"] = &fstest.MapFile{Data: []byte(procStat("7", "kubelet", 'S', "6000"))}
	if ps := get(); len(ps) != 1 || fsys.scans != 2 || ps[0].Stopped() {
		t.Fatalf("pid reused: %+v after %d scans", ps, fsys.scans)
	}
	// A second kubelet is seen at the latest a minute later.
	m["proc/8/comm"] = &fstest.MapFile{Data: []byte("kubelet\n")}
	m["proc/8/stat"] = &fstest.MapFile{Data: []byte(procStat("8", "kubelet", 'S', "7000"))}
	if ps := get(); len(ps) != 1 || fsys.scans != 2 {
		t.Fatalf("within the minute: %+v after %d scans", ps, fsys.scans)
	}
	clk.Step(rescanEvery)
	if ps := get(); len(ps) != 2 || fsys.scans != 3 {
		t.Fatalf("after a minute: %+v after %d scans", ps, fsys.scans)
	}
	// Gone: scanned, and nothing found is not remembered.
	for _, n := range []string{"proc/7/comm", "proc/7/stat", "proc/7/cmdline", "proc/8/comm", "proc/8/stat"} {
		delete(m, n)
	}
	if ps := get(); len(ps) != 0 || fsys.scans != 4 {
		t.Fatalf("gone: %+v after %d scans", ps, fsys.scans)
	}
	if ps := get(); len(ps) != 0 || fsys.scans != 5 {
		t.Fatalf("none: %+v after %d scans", ps, fsys.scans)
	}
}

// TestKubeletFinderRealProc follows a real process named kubelet in this
// machine's /proc through its stop, its end and a successor.
func TestKubeletFinderRealProc(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep")
	}
	b, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "kubelet")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	start := func() *exec.Cmd {
		t.Helper()
		cmd := exec.Command(bin, "300")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	f := NewKubeletFinder(host.FS("/"), nil)
	has := func(pid int) (Process, bool) {
		t.Helper()
		ps, err := f.Kubelets(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ps {
			if p.PID == pid {
				return p, true
			}
		}
		return Process{}, false
	}
	first := start()
	if _, ok := has(first.Process.Pid); !ok {
		t.Fatalf("pid %d not found", first.Process.Pid)
	}
	if err := first.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()
	second := start()
	if _, ok := has(first.Process.Pid); ok {
		t.Errorf("pid %d still found after it ended", first.Process.Pid)
	}
	if _, ok := has(second.Process.Pid); !ok {
		t.Errorf("successor pid %d not found", second.Process.Pid)
	}
}

// BenchmarkKubelets compares a full scan of this machine's proc with the
// remembering finder, with a process named kubelet running.
func BenchmarkKubelets(b *testing.B) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		b.Skip("no sleep")
	}
	bin := filepath.Join(b.TempDir(), "kubelet")
	if data, err := os.ReadFile(sleep); err != nil {
		b.Fatal(err)
	} else if err := os.WriteFile(bin, data, 0o755); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "300")
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	fsys := host.FS("/")
	b.Run("scan", func(b *testing.B) {
		p := ProcFS{FS: fsys}
		for b.Loop() {
			if _, err := p.Kubelets(context.Background()); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("finder", func(b *testing.B) {
		f := NewKubeletFinder(fsys, nil)
		for b.Loop() {
			if _, err := f.Kubelets(context.Background()); err != nil {
				b.Fatal(err)
			}
		}
	})
}
