package netcheck

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/node-doctor/node-doctor/pkg/check"
)

// ConntrackSettings tune the conntrack check.
type ConntrackSettings struct {
	// WarnRatio and ProblemRatio of nf_conntrack_count to nf_conntrack_max.
	WarnRatio    float64 `yaml:"warnRatio"`
	ProblemRatio float64 `yaml:"problemRatio"`
}

// Validate range-checks the ratios.
func (s *ConntrackSettings) Validate() error {
	if s.WarnRatio <= 0 || s.WarnRatio > 1 || s.ProblemRatio <= 0 || s.ProblemRatio > 1 || s.WarnRatio > s.ProblemRatio {
		return fmt.Errorf("need 0 < warnRatio (%g) <= problemRatio (%g) <= 1", s.WarnRatio, s.ProblemRatio)
	}
	return nil
}

// ConntrackStats are the per-CPU counters summed over CPUs.
type ConntrackStats struct {
	Entries, InsertFailed, Drop, EarlyDrop uint64
}

// ParseConntrackStat sums /proc/net/stat/nf_conntrack (a header line, then
// one line of hex counters per CPU).
func ParseConntrackStat(b []byte) (ConntrackStats, error) {
	var s ConntrackStats
	sc := bufio.NewScanner(bytes.NewReader(b))
	var cols []string
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if cols == nil {
			cols = f
			continue
		}
		if len(f) != len(cols) {
			return s, fmt.Errorf("conntrack stat: %d columns, header has %d", len(f), len(cols))
		}
		for i, c := range cols {
			v, err := strconv.ParseUint(f[i], 16, 64)
			if err != nil {
				return s, fmt.Errorf("conntrack stat: column %s: %w", c, err)
			}
			switch c {
			case "entries":
				s.Entries = v // the same global count on every CPU line
			case "insert_failed":
				s.InsertFailed += v
			case "drop":
				s.Drop += v
			case "early_drop":
				s.EarlyDrop += v
			}
		}
	}
	if cols == nil {
		return s, errors.New("conntrack stat: empty")
	}
	return s, nil
}

// Conntrack checks the conntrack table's fill and whether it is dropping
// connections (insert_failed, drop rising between runs).
func Conntrack(fsys fs.FS) check.Definition {
	s := &ConntrackSettings{WarnRatio: 0.75, ProblemRatio: 0.9}
	var mu sync.Mutex
	var prev *ConntrackStats
	return check.Definition{
		Name:        "conntrack",
		Area:        "network",
		Description: "the conntrack table is not nearly full and is not dropping connections",
		Interval:    time.Minute,
		Timeout:     10 * time.Second,
		Conditions:  []string{check.ConditionConntrack},
		Settings:    s,
		Check: check.Func(func(ctx context.Context) ([]check.Finding, error) {
			count, err1 := readUint(fsys, "proc/sys/net/netfilter/nf_conntrack_count")
			maxv, err2 := readUint(fsys, "proc/sys/net/netfilter/nf_conntrack_max")
			if errors.Is(err1, fs.ErrNotExist) || errors.Is(err2, fs.ErrNotExist) {
				return nil, check.NotApplicable("nf_conntrack is not loaded (no /proc/sys/net/netfilter/nf_conntrack_count)")
			}
			if err := errors.Join(err1, err2); err != nil {
				return nil, err
			}
			var out []check.Finding
			ratio := 0.0
			if maxv > 0 {
				ratio = float64(count) / float64(maxv)
			}
			det := map[string]string{"count": fmt.Sprint(count), "max": fmt.Sprint(maxv), "ratio": fmt.Sprintf("%.3f", ratio)}
			var f check.Finding
			switch {
			case ratio >= s.ProblemRatio:
				f = finding(check.SeverityProblem, "ConntrackTableFull", fmt.Sprintf("conntrack table %.0f%% full (%d of %d); new connections are dropped when it fills: raise net.netfilter.nf_conntrack_max (kube-proxy --conntrack-max-per-core) or find what opens so many connections (conntrack -L)", ratio*100, count, maxv))
			case ratio >= s.WarnRatio:
				f = finding(check.SeverityWarning, "ConntrackTableFilling", fmt.Sprintf("conntrack table %.0f%% full (%d of %d): raise net.netfilter.nf_conntrack_max before it fills", ratio*100, count, maxv))
			default:
				f = finding(check.SeverityOK, "ConntrackTableOK", fmt.Sprintf("conntrack table %.1f%% full (%d of %d)", ratio*100, count, maxv))
			}
			f.Condition, f.Details = check.ConditionConntrack, det
			out = append(out, f)
			b, err := fs.ReadFile(fsys, "proc/net/stat/nf_conntrack")
			if err != nil {
				// Kernels without the procfs stats file (CONFIG_NF_CONNTRACK_PROCFS=n).
				f := finding(check.SeverityOK, "ConntrackStatsUnavailable", "per-CPU conntrack statistics are not in /proc/net/stat/nf_conntrack on this kernel; insert_failed and drop are not watched")
				f.Condition = check.ConditionConntrack
				return append(out, f), nil
			}
			st, err := ParseConntrackStat(b)
			if err != nil {
				return nil, err
			}
			mu.Lock()
			last := prev
			prev = &st
			mu.Unlock()
			if last != nil && (st.InsertFailed > last.InsertFailed || st.Drop > last.Drop) {
				f := finding(check.SeverityProblem, "ConntrackDropping", fmt.Sprintf("conntrack insert_failed rose by %d and drop by %d since the last run: connections are being lost (table full, or NAT port clashes under load); check nf_conntrack_max and kube-proxy's --conntrack settings", st.InsertFailed-last.InsertFailed, st.Drop-last.Drop))
				f.Condition = check.ConditionConntrack
				f.Details = map[string]string{"insert_failed": fmt.Sprint(st.InsertFailed), "drop": fmt.Sprint(st.Drop)}
				out = append(out, f)
			}
			return out, nil
		}),
	}
}

func readUint(fsys fs.FS, name string) (uint64, error) {
	b, err := fs.ReadFile(fsys, name)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", name, err)
	}
	return v, nil
}
