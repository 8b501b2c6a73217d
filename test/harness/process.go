package harness

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Proc is a component process the harness started. Pid plus StartTime
// identify it across a cluster-up/cluster-down pair without risking a
// recycled pid.
type Proc struct {
	Name      string `json:"name"`
	Pid       int    `json:"pid"`
	StartTime uint64 `json:"start_time"`
	LogPath   string `json:"log_path"`

	exited chan struct{} // closed when the process exits, nil when not our child
	err    error
}

// startProc starts bin in its own process group with output appended to
// <logDir>/<name>.log. The process outlives the caller on purpose: cluster-up
// exits and leaves the node running.
func startProc(logDir, name, bin string, args []string, env []string) (*Proc, error) {
	logPath := filepath.Join(logDir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s: open log: %w", name, err)
	}
	defer f.Close()
	fmt.Fprintf(f, "### %s %s %s\n", time.Now().UTC().Format(time.RFC3339), bin, strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Stdout = f
	cmd.Stderr = f
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: start %s: %w", name, bin, err)
	}
	p := &Proc{Name: name, Pid: cmd.Process.Pid, LogPath: logPath, exited: make(chan struct{})}
	p.StartTime, _ = procStartTime(p.Pid)
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// Alive reports whether the process is still the one the harness started.
func (p *Proc) Alive() bool {
	if p.exited != nil {
		select {
		case <-p.exited:
			return false
		default:
			return true
		}
	}
	st, err := procStartTime(p.Pid)
	return err == nil && st == p.StartTime && !isZombie(p.Pid)
}

// exitErr describes how a process ended, with the tail of its log.
func (p *Proc) exitErr() error {
	return fmt.Errorf("%s exited (%v); last log lines:\n%s", p.Name, p.err, Tail(p.LogPath, 30))
}

// stop sends SIGTERM to the process group, then SIGKILL after grace.
func (p *Proc) stop(ctx context.Context, log *slog.Logger, grace time.Duration) {
	if !p.Alive() {
		return
	}
	log.Debug("stopping component", "component", p.Name, "pid", p.Pid)
	_ = syscall.Kill(-p.Pid, syscall.SIGTERM)
	if p.waitGone(ctx, grace) {
		return
	}
	log.Warn("component ignored SIGTERM, killing", "component", p.Name, "pid", p.Pid)
	_ = syscall.Kill(-p.Pid, syscall.SIGKILL)
	p.waitGone(ctx, 5*time.Second)
}

func (p *Proc) waitGone(ctx context.Context, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if !p.Alive() {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return !p.Alive()
}

// procStartTime reads field 22 of /proc/<pid>/stat (start time in ticks).
func procStartTime(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may contain spaces; fields start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, errors.New("short stat")
	}
	return strconv.ParseUint(f[19], 10, 64)
}

func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && len(b) > i+2 && b[i+2] == 'Z'
}

// Tail returns the last n lines of a file, or a note why it could not.
func Tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// waitFor polls ready until it returns true, the process exits (reported
// with its log tail instead of a timeout), or timeout passes.
func waitFor(ctx context.Context, p *Proc, timeout time.Duration, what string, ready func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		ok, err := ready(ctx)
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		if p != nil && !p.Alive() {
			return p.exitErr()
		}
		select {
		case <-ctx.Done():
			msg := fmt.Sprintf("%s: not ready after %s", what, timeout)
			if last != nil {
				msg += fmt.Sprintf(" (last error: %v)", last)
			}
			if p != nil {
				msg += fmt.Sprintf("; last lines of %s:\n%s", p.LogPath, Tail(p.LogPath, 30))
			}
			return errors.New(msg)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// run runs a short host command and returns its combined output.
func run(ctx context.Context, name string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}
