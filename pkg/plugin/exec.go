package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"
)

// Status is what a script's exit code says, in NPD's plugin protocol.
type Status int

// Exit code 0 is OK, 1 a problem, anything else (or no exit code: killed,
// timed out, not started) unknown.
const (
	OK Status = iota
	NonOK
	Unknown
)

func (s Status) String() string {
	switch s {
	case OK:
		return "ok"
	case NonOK:
		return "problem"
	}
	return "unknown"
}

// maxRead is how much of a script's stdout and stderr is kept (NPD's
// maxCustomPluginBufferBytes); the rest is read and discarded.
const maxRead = 4 << 10

// killGrace is how long after killing a script's process group its output
// pipes may stay open (a descendant that left the group) before they are
// closed on our side.
const killGrace = time.Second

// Result is one run of one script.
type Result struct {
	Status Status
	// Message is stdout trimmed and cut to max_output_length, or what went
	// wrong.
	Message string
	// Stderr is the start of what the script wrote to stderr, for the log.
	Stderr   string
	ExitCode int
	TimedOut bool
	Duration time.Duration
}

// Execute runs path with args in a process group of its own and waits for
// it, at most timeout: then the whole group is killed. maxOutput bounds the
// message in bytes. Cancelling ctx kills the script as a timeout does.
func Execute(ctx context.Context, path string, args []string, timeout time.Duration, maxOutput int) Result {
	start := time.Now()
	res := execute(ctx, path, args, timeout)
	res.Duration = time.Since(start)
	res.Message = truncate(res.Message, maxOutput)
	return res
}

func execute(ctx context.Context, path string, args []string, timeout time.Duration) Result {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.Command(path, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	outR, outW, err := os.Pipe()
	if err != nil {
		return Result{Status: Unknown, ExitCode: -1, Message: fmt.Sprintf("start plugin %s: %v", path, err)}
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return Result{Status: Unknown, ExitCode: -1, Message: fmt.Sprintf("start plugin %s: %v", path, err)}
	}
	cmd.Stdout, cmd.Stderr = outW, errW
	err = cmd.Start()
	// Only the script (and what it starts) holds the write ends now.
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return Result{Status: Unknown, ExitCode: -1, Message: fmt.Sprintf("start plugin %s: %v", path, err)}
	}

	var stdout, stderr boundedBuffer
	read := make(chan struct{})
	go func() {
		done := make(chan struct{})
		go func() { _, _ = io.Copy(&stderr, errR); close(done) }()
		_, _ = io.Copy(&stdout, outR)
		<-done
		close(read)
	}()

	// The output ends when every process holding the pipes has exited. Until
	// the script is waited for, its pid (and so its group id) cannot be
	// reused, so killing the group is safe.
	timedOut := false
	select {
	case <-read:
	case <-ctx.Done():
		timedOut = true
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		select {
		case <-read:
		case <-time.After(killGrace):
			outR.Close()
			errR.Close()
			<-read
		}
	}
	werr := cmd.Wait()
	outR.Close()
	errR.Close()

	res := Result{Stderr: stderr.String(), ExitCode: cmd.ProcessState.ExitCode(), TimedOut: timedOut}
	var exitErr *exec.ExitError
	if werr != nil && !errors.As(werr, &exitErr) {
		res.Status, res.Message = Unknown, fmt.Sprintf("wait for plugin %s: %v", path, werr)
		return res
	}
	res.Message = strings.TrimSpace(stdout.String())
	if timedOut {
		// As NPD words it, so alerts on the message keep matching.
		res.Message = fmt.Sprintf("Timeout when running plugin %q: state - %s. output - %q", path, cmd.ProcessState, res.Message)
		res.Status = Unknown
		return res
	}
	switch res.ExitCode {
	case 0:
		res.Status = OK
	case 1:
		res.Status = NonOK
	default:
		res.Status = Unknown
	}
	return res
}

// truncate cuts s to at most n bytes, not inside a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for i := 1; i < utf8.UTFMax && len(s) > 0; i++ {
		if r, size := utf8.DecodeLastRuneInString(s); r != utf8.RuneError || size > 1 {
			break
		}
		s = s[:len(s)-1]
	}
	return s
}

// boundedBuffer keeps the first maxRead bytes written to it and discards
// the rest, so a script writing gigabytes costs no memory.
type boundedBuffer struct{ b []byte }

func (w *boundedBuffer) Write(p []byte) (int, error) {
	if room := maxRead - len(w.b); room > 0 {
		w.b = append(w.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (w *boundedBuffer) String() string { return string(w.b) }
