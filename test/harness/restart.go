package harness

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Kill SIGKILLs a component's process group, as a crash would, and returns a
// function that starts it again with the same command line (log appended),
// as a supervisor would. Teardown stops whichever process runs last.
func (c *Cluster) Kill(ctx context.Context, name string) (restart func(context.Context) error, err error) {
	return killComponent(ctx, c.state, name, func(p *Proc) {
		if name == "containerd" && c.Containerd != nil {
			c.Containerd.Proc = p
		}
	})
}

// Kill SIGKILLs a containerd started by StartContainerd; see (*Cluster).Kill.
func (c *Containerd) Kill(ctx context.Context) (restart func(context.Context) error, err error) {
	if c == nil || c.state == nil {
		return nil, fmt.Errorf("harness: kill containerd: not started by StartContainerd; use (*Cluster).Kill")
	}
	return killComponent(ctx, c.state, "containerd", func(p *Proc) { c.Proc = p })
}

func killComponent(ctx context.Context, st *State, name string, replaced func(*Proc)) (func(context.Context) error, error) {
	p := st.proc(name)
	if p == nil || !p.Alive() {
		return nil, fmt.Errorf("harness: kill %s: not running", name)
	}
	// The command line is read before the kill: the harness does not keep it.
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.Pid))
	if err != nil {
		return nil, fmt.Errorf("harness: kill %s: read command line: %w", name, err)
	}
	argv := strings.Split(string(bytes.TrimRight(raw, "\x00")), "\x00")
	if err := syscall.Kill(-p.Pid, syscall.SIGKILL); err != nil {
		return nil, fmt.Errorf("harness: kill %s: %w", name, err)
	}
	if !p.waitGone(ctx, 10*time.Second) {
		return nil, fmt.Errorf("harness: kill %s: pid %d still there 10s after SIGKILL", name, p.Pid)
	}
	return func(ctx context.Context) error {
		np, err := startProc(filepath.Dir(p.LogPath), name, argv[0], argv[1:], nil)
		if err != nil {
			return fmt.Errorf("harness: restart %s: %w", name, err)
		}
		for i := range st.Procs {
			if st.Procs[i] == p {
				st.Procs[i] = np
			}
		}
		replaced(np)
		return st.save()
	}, nil
}
