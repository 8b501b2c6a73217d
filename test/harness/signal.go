package harness

import (
	"fmt"
	"syscall"
)

// Signal sends sig to a component's process group (SIGSTOP/SIGCONT to
// freeze and resume it as a hung process would be).
func (c *Cluster) Signal(name string, sig syscall.Signal) error {
	p := c.state.proc(name)
	if p == nil || !p.Alive() {
		return fmt.Errorf("harness: signal %s: not running", name)
	}
	if err := syscall.Kill(-p.Pid, sig); err != nil {
		return fmt.Errorf("harness: signal %s %v: %w", name, sig, err)
	}
	return nil
}
