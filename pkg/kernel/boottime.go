package kernel

import (
	"bytes"
	"fmt"
	"io/fs"
	"strconv"
	"time"

	"k8s.io/utils/clock"
)

// BootTime returns the wall-clock time the kernel booted, to turn the
// monotonic timestamps of kmsg records into wall time. It prefers
// proc/uptime (centisecond resolution) and falls back to btime in proc/stat.
// Time spent suspended makes kernel timestamps lag; servers rarely suspend.
func BootTime(fsys fs.FS, clk clock.PassiveClock) (time.Time, error) {
	b, err := fs.ReadFile(fsys, "proc/uptime")
	if err == nil {
		if up, ok := parseUptime(b); ok {
			return clk.Now().Add(-up), nil
		}
	}
	b, err2 := fs.ReadFile(fsys, "proc/stat")
	if err2 != nil {
		return time.Time{}, fmt.Errorf("boot time: read proc/uptime: %v; read proc/stat: %w", err, err2)
	}
	if bt, ok := parseBtime(b); ok {
		return bt, nil
	}
	return time.Time{}, fmt.Errorf("boot time: no usable uptime in proc/uptime and no btime in proc/stat")
}

// parseUptime parses the first field of proc/uptime ("788.95 511.68").
func parseUptime(b []byte) (time.Duration, bool) {
	f := bytes.Fields(b)
	if len(f) == 0 {
		return 0, false
	}
	s, err := strconv.ParseFloat(string(f[0]), 64)
	if err != nil || s < 0 || s > 1e9 {
		return 0, false
	}
	return time.Duration(s * float64(time.Second)), true
}

// parseBtime finds "btime <unix seconds>" in proc/stat.
func parseBtime(b []byte) (time.Time, bool) {
	for line := range bytes.Lines(b) {
		if v, ok := bytes.CutPrefix(line, []byte("btime ")); ok {
			n, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
			if err != nil || n <= 0 {
				return time.Time{}, false
			}
			return time.Unix(n, 0), true
		}
	}
	return time.Time{}, false
}
