package plugin

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// script writes an executable shell script to the test's temp dir.
func script(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestExecuteExitCodes(t *testing.T) {
	for _, c := range []struct {
		body   string
		status Status
		msg    string
	}{
		{"echo '  all good  '; exit 0", OK, "all good"},
		{"echo ntp.service is not running; echo on stderr >&2; exit 1", NonOK, "ntp.service is not running"},
		{"echo could not tell; exit 2", Unknown, "could not tell"},
		{"exit 3", Unknown, ""},
		{"kill -9 $$", Unknown, ""},
	} {
		res := Execute(context.Background(), script(t, "p.sh", c.body), nil, 5*time.Second, 80)
		if res.Status != c.status || res.Message != c.msg || res.TimedOut {
			t.Errorf("%q: %+v, want %s %q", c.body, res, c.status, c.msg)
		}
	}
	res := Execute(context.Background(), script(t, "p.sh", `echo "$1|$2"; echo oops >&2; exit 1`), []string{"--component=x", "two words"}, 5*time.Second, 80)
	if res.Message != "--component=x|two words" || res.Stderr != "oops\n" {
		t.Errorf("args and stderr: %+v", res)
	}
	res = Execute(context.Background(), filepath.Join(t.TempDir(), "gone.sh"), nil, time.Second, 80)
	if res.Status != Unknown || !strings.Contains(res.Message, "gone.sh") {
		t.Errorf("a missing script: %+v, want unknown naming it", res)
	}
}

func TestExecuteTruncates(t *testing.T) {
	long := strings.Repeat("0123456789", 20)
	res := Execute(context.Background(), script(t, "p.sh", "echo "+long+"; exit 1"), nil, 5*time.Second, 80)
	if res.Status != NonOK || res.Message != long[:80] {
		t.Errorf("got %q (%d bytes), want the first 80", res.Message, len(res.Message))
	}
	// Not inside a UTF-8 sequence: "é" is 2 bytes.
	res = Execute(context.Background(), script(t, "p.sh", "echo aéé"), nil, 5*time.Second, 4)
	if res.Message != "aé" {
		t.Errorf("got %q, want %q", res.Message, "aé")
	}
	if res = Execute(context.Background(), script(t, "p.sh", "echo x; exit 1"), nil, 5*time.Second, 0); res.Message != "" || res.Status != NonOK {
		t.Errorf("max_output_length 0: %+v", res)
	}
}

// TestExecuteHugeOutput: a script writing 256 MiB before it answers is read
// to its end (it is not blocked) with only the first bytes kept; one that
// writes without end is killed at its timeout.
func TestExecuteHugeOutput(t *testing.T) {
	res := Execute(context.Background(), script(t, "p.sh", "head -c 268435456 /dev/zero | tr '\\0' x; echo; exit 1"), nil, 30*time.Second, 80)
	if res.Status != NonOK || res.Message != strings.Repeat("x", 80) || res.TimedOut {
		t.Errorf("256 MiB then exit 1: status %s timed out %v message %q", res.Status, res.TimedOut, res.Message)
	}
	start := time.Now()
	res = Execute(context.Background(), script(t, "p.sh", "exec cat /dev/zero"), nil, time.Second, 80)
	if res.Status != Unknown || !res.TimedOut || time.Since(start) > 10*time.Second {
		t.Errorf("endless output: %+v after %s", res, time.Since(start))
	}
	var b boundedBuffer
	chunk := make([]byte, 1<<20)
	for range 64 {
		if n, err := b.Write(chunk); n != len(chunk) || err != nil {
			t.Fatal(n, err)
		}
	}
	if len(b.b) != maxRead || cap(b.b) > 2*maxRead {
		t.Errorf("kept %d bytes (cap %d) of 64 MiB, want %d", len(b.b), cap(b.b), maxRead)
	}
}

// TestExecuteTimeoutKillsGroup: a script that starts a sleeping child and
// hangs is killed at its timeout with the child.
func TestExecuteTimeoutKillsGroup(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child")
	for name, c := range map[string]struct{ body, state string }{
		// The script waits for its child.
		"hangs": {"sleep 300 & echo $! > " + pidFile + "; echo started; wait", "signal: killed"},
		// The script exits, but its child keeps stdout open: NPD waits for
		// the output too, so this is a timeout as well.
		"leaves a child": {"sleep 300 & echo $! > " + pidFile + "; echo started; exit 0", "exit status 0"},
	} {
		body := c.body
		t.Run(name, func(t *testing.T) {
			os.Remove(pidFile)
			path := script(t, "p.sh", body)
			start := time.Now()
			res := Execute(context.Background(), path, nil, 500*time.Millisecond, 200)
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %s with a 500ms timeout", d)
			}
			want := `Timeout when running plugin "` + path + `": state - ` + c.state + `. output - "started"`
			if !res.TimedOut || res.Status != Unknown || res.Message != want {
				t.Errorf("got %+v, want unknown %q", res, want)
			}
			b, err := os.ReadFile(pidFile)
			if err != nil {
				t.Fatal(err)
			}
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(5 * time.Second)
			for alive(pid) {
				if time.Now().After(deadline) {
					_ = syscall.Kill(pid, syscall.SIGKILL)
					t.Fatalf("child %d still running after the timeout", pid)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

// alive: the process exists and is not a zombie waiting for its reaper.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func TestExecuteCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(200 * time.Millisecond); cancel() }()
	start := time.Now()
	res := Execute(ctx, script(t, "p.sh", "sleep 300"), nil, time.Minute, 80)
	if res.Status != Unknown || time.Since(start) > 10*time.Second {
		t.Errorf("cancelled: %+v after %s", res, time.Since(start))
	}
}
