package harness

import (
	"fmt"
	"syscall"
)

// Freeze stops a component (SIGSTOP to its process group), as a hung
// process looks to its clients: connections open, no answers. Call thaw to
// let it go on; tests register thaw with t.Cleanup so teardown (which a
// frozen process would ignore) finds it running.
func (c *Cluster) Freeze(name string) (thaw func() error, err error) {
	p := c.state.proc(name)
	if p == nil || !p.Alive() {
		return nil, fmt.Errorf("harness: freeze %s: not running", name)
	}
	if err := syscall.Kill(-p.Pid, syscall.SIGSTOP); err != nil {
		return nil, fmt.Errorf("harness: freeze %s: %w", name, err)
	}
	thawed := false
	return func() error {
		if thawed {
			return nil
		}
		thawed = true
		if err := syscall.Kill(-p.Pid, syscall.SIGCONT); err != nil {
			return fmt.Errorf("harness: thaw %s: %w", name, err)
		}
		return nil
	}, nil
}
