package main

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestRunServerBoundsClientsAndHasNoProfiling runs the agent and checks its
// HTTP server from the outside: it binds the address it is given, serves no
// profiling or debug endpoint, and hangs up on a client that sends half a
// request and stalls (the header timeout), so stalled scrapers cannot pile up.
func TestRunServerBoundsClientsAndHasNoProfiling(t *testing.T) {
	cmd := exec.Command(binary, "run", "--metrics-address", "127.0.0.1:0", "--only", "ip-forward")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := addrRe.FindStringSubmatch(sc.Text()); m != nil {
				addrc <- m[1]
			}
		}
		done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			t.Error("agent did not stop within 15s of SIGTERM")
		}
	})
	var addr string
	select {
	case addr = <-addrc:
	case <-time.After(time.Minute):
		t.Fatal("agent never said where it serves")
	}
	if host, _, _ := net.SplitHostPort(addr); host != "127.0.0.1" {
		t.Errorf("bound %s, asked for 127.0.0.1", addr)
	}

	for _, p := range []string{"/debug/pprof/", "/debug/pprof/goroutine", "/debug/vars", "/debug/pprof/cmdline"} {
		if code, _ := get(t, "http://"+addr+p); code != http.StatusNotFound {
			t.Errorf("%s: HTTP %d, want 404 (no profiling endpoints)", p, code)
		}
	}

	// Half a request, then nothing: the server must hang up by itself.
	conn, err := (&net.Dialer{}).DialContext(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /metrics HTTP/1.1\r\nHost: x\r\n"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_ = conn.SetReadDeadline(time.Now().Add(time.Minute))
	b, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("the server kept a stalled request open for %s: %v", time.Since(start).Round(time.Second), err)
	}
	t.Logf("stalled request closed by the server after %s (%q)", time.Since(start).Round(100*time.Millisecond), strings.SplitN(string(b), "\r\n", 2)[0])
}
