package kubelet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"time"

	"k8s.io/utils/clock"

	"github.com/node-doctor/node-doctor/pkg/kernel"
)

// userHZ is the unit of proc/<pid>/stat times, fixed at 100 on Linux.
const userHZ = 100

// ProcFS finds kubelet processes in the node's proc (FS is the host root;
// nil Clock: the real one).
type ProcFS struct {
	FS    fs.FS
	Clock clock.PassiveClock
}

// Kubelets implements Processes: every live process whose comm is
// "kubelet".
func (p ProcFS) Kubelets(ctx context.Context) ([]Process, error) {
	ps, _, err := p.scan(ctx)
	return ps, err
}

// scan finds the kubelets and their start times in clock ticks.
func (p ProcFS) scan(ctx context.Context) ([]Process, []uint64, error) {
	ents, err := fs.ReadDir(p.FS, "proc")
	if err != nil {
		return nil, nil, fmt.Errorf("kubelet: list processes: %w", err)
	}
	var boot time.Time
	var out []Process
	var starts []uint64
	var commBuf [64]byte // comm is at most 16 bytes
	for _, e := range ents {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		dir := "proc/" + e.Name()
		comm, ok := readSmall(p.FS, dir+"/comm", commBuf[:])
		if !ok || string(bytes.TrimSpace(comm)) != "kubelet" {
			continue // gone, or another program
		}
		stat, err := fs.ReadFile(p.FS, dir+"/stat")
		if err != nil {
			continue
		}
		state, ticks, err := ParseStat(stat)
		if err != nil {
			return nil, nil, fmt.Errorf("kubelet: %s/stat: %w", dir, err)
		}
		if state == 'Z' || state == 'X' {
			continue // dead, not yet reaped
		}
		cmd, _ := fs.ReadFile(p.FS, dir+"/cmdline")
		if boot.IsZero() {
			var clk clock.PassiveClock = clock.RealClock{}
			if p.Clock != nil {
				clk = p.Clock
			}
			if boot, err = kernel.BootTime(p.FS, clk); err != nil {
				return nil, nil, fmt.Errorf("kubelet: %w", err)
			}
		}
		out = append(out, Process{
			PID:     pid,
			Args:    strings.Split(strings.TrimRight(string(cmd), "\x00"), "\x00"),
			State:   state,
			Started: boot.Add(time.Duration(ticks) * time.Second / userHZ),
		})
		starts = append(starts, ticks)
	}
	return out, starts, nil
}

// ParseStat reads the state and the start time (in clock ticks after
// boot) from proc/<pid>/stat. The command name may hold spaces and
// parentheses, so fields are counted from its last ')'.
func ParseStat(b []byte) (state byte, startTicks uint64, err error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, errors.New("no command name")
	}
	f := bytes.Fields(b[i+1:])
	// After the name: state is field 3 of the line, starttime field 22.
	if len(f) < 20 || len(f[0]) != 1 {
		return 0, 0, errors.New("too few fields")
	}
	startTicks, err = strconv.ParseUint(string(f[19]), 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("start time %q: %w", f[19], err)
	}
	return f[0][0], startTicks, nil
}
