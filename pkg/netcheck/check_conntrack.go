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
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

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

// ConntrackStats are the per-CPU counters summed over CPUs, plus the global
// entry count (and, over ctnetlink, the table size).
type ConntrackStats struct {
	Entries, Max                                                 uint64
	Found, Invalid, Insert, InsertFailed, Drop, EarlyDrop, Error uint64
	SearchRestart, ClashResolve, ChainTooLong                    uint64
	CPUs                                                         int
}

// counters lists the per-CPU counters by their metric label.
func (s *ConntrackStats) counters() []struct {
	name string
	v    uint64
} {
	return []struct {
		name string
		v    uint64
	}{{"found", s.Found}, {"invalid", s.Invalid}, {"insert", s.Insert}, {"insert_failed", s.InsertFailed},
		{"drop", s.Drop}, {"early_drop", s.EarlyDrop}, {"error", s.Error}, {"search_restart", s.SearchRestart},
		{"clash_resolve", s.ClashResolve}, {"chain_too_long", s.ChainTooLong}}
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
		s.CPUs++
		for i, c := range cols {
			v, err := strconv.ParseUint(f[i], 16, 64)
			if err != nil {
				return s, fmt.Errorf("conntrack stat: column %s: %w", c, err)
			}
			switch c {
			case "entries":
				s.Entries = v // the same global count on every CPU line
			case "found":
				s.Found += v
			case "invalid":
				s.Invalid += v
			case "insert":
				s.Insert += v
			case "insert_failed":
				s.InsertFailed += v
			case "drop":
				s.Drop += v
			case "early_drop":
				s.EarlyDrop += v
			case "icmp_error": // CTA_STATS_ERROR over ctnetlink
				s.Error += v
			case "search_restart":
				s.SearchRestart += v
			case "clashres":
				s.ClashResolve += v
			case "chainlength": // st->chaintoolong
				s.ChainTooLong += v
			}
		}
	}
	if cols == nil {
		return s, errors.New("conntrack stat: empty")
	}
	return s, nil
}

// Where the per-CPU statistics came from.
const (
	ConntrackSourceProcfs    = "procfs"
	ConntrackSourceCtnetlink = "ctnetlink"
	ConntrackSourceNone      = "none"
)

// Conntrack checks the conntrack table's fill and whether it is dropping
// connections (insert_failed, drop rising between runs). Fill comes from the
// nf_conntrack_count/max sysctls; the per-CPU counters from
// /proc/net/stat/nf_conntrack when the kernel has it, else over ctnetlink
// (nl; nil: not read).
func Conntrack(fsys fs.FS, nl ConntrackNetlink) check.Definition {
	s := &ConntrackSettings{WarnRatio: 0.75, ProblemRatio: 0.9}
	return check.Definition{
		Name:        "conntrack",
		Area:        "network",
		Description: "the conntrack table is not nearly full and is not dropping connections",
		Interval:    time.Minute,
		Timeout:     10 * time.Second,
		Conditions:  []string{check.ConditionConntrack},
		Settings:    s,
		Check:       newConntrackCheck(fsys, nl, s),
	}
}

// conntrackCheck is the check plus the metrics of its last run.
type conntrackCheck struct {
	fsys fs.FS
	nl   ConntrackNetlink
	s    *ConntrackSettings

	mu sync.Mutex
	// prev: the last counters read, kept over runs that could not read
	// them (they only grow); cur: those of the last run, for the metrics.
	prev, cur *ConntrackStats
	count     *ConntrackStats // fill of the last run, nil before the first
	source    string

	entriesDesc, limitDesc, statDesc, sourceDesc *prometheus.Desc
}

func newConntrackCheck(fsys fs.FS, nl ConntrackNetlink, s *ConntrackSettings) *conntrackCheck {
	return &conntrackCheck{fsys: fsys, nl: nl, s: s,
		entriesDesc: prometheus.NewDesc("node_doctor_conntrack_entries", "Connections in the conntrack table at the last run.", nil, nil),
		limitDesc:   prometheus.NewDesc("node_doctor_conntrack_entries_limit", "Size of the conntrack table (nf_conntrack_max) at the last run.", nil, nil),
		statDesc: prometheus.NewDesc("node_doctor_conntrack_stat_total",
			"The kernel's per-CPU conntrack counters summed over CPUs, as read at the last run (from /proc/net/stat/nf_conntrack or ctnetlink).", []string{"stat"}, nil),
		sourceDesc: prometheus.NewDesc("node_doctor_conntrack_stats_source",
			"1 for where the last run read the per-CPU conntrack counters: procfs, ctnetlink or none.", []string{"source"}, nil),
	}
}

// Run reads fill and counters and judges them.
func (c *conntrackCheck) Run(ctx context.Context) ([]check.Finding, error) {
	s := c.s
	count, err1 := readUint(c.fsys, "proc/sys/net/netfilter/nf_conntrack_count")
	maxv, err2 := readUint(c.fsys, "proc/sys/net/netfilter/nf_conntrack_max")
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

	st, source, unavailable, err := c.readStats(ctx)
	c.mu.Lock()
	last := c.prev
	if st != nil {
		c.prev = st
	}
	c.cur, c.source = st, source
	c.count = &ConntrackStats{Entries: count, Max: maxv}
	c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if st == nil {
		unavailable.Condition = check.ConditionConntrack
		return append(out, *unavailable), nil
	}
	out[0].Details["stats_source"] = source
	if last != nil && (st.InsertFailed > last.InsertFailed || st.Drop > last.Drop) {
		f := finding(check.SeverityProblem, "ConntrackDropping", fmt.Sprintf("conntrack insert_failed rose by %d and drop by %d since the last run: connections are being lost (table full, or NAT port clashes under load); check nf_conntrack_max and kube-proxy's --conntrack settings", st.InsertFailed-last.InsertFailed, st.Drop-last.Drop))
		f.Condition = check.ConditionConntrack
		f.Details = map[string]string{"insert_failed": fmt.Sprint(st.InsertFailed), "drop": fmt.Sprint(st.Drop), "stats_source": source}
		out = append(out, f)
	}
	return out, nil
}

// readStats reads the per-CPU counters: procfs when the kernel has the
// file (no capability needed, cheapest), ctnetlink otherwise. When neither
// works it returns a finding saying why instead of counters.
func (c *conntrackCheck) readStats(ctx context.Context) (*ConntrackStats, string, *check.Finding, error) {
	b, err := fs.ReadFile(c.fsys, "proc/net/stat/nf_conntrack")
	if err == nil {
		st, err := ParseConntrackStat(b)
		if err != nil {
			return nil, ConntrackSourceProcfs, nil, err
		}
		return &st, ConntrackSourceProcfs, nil, nil
	}
	if c.nl == nil {
		f := finding(check.SeverityOK, "ConntrackStatsUnavailable", "per-CPU conntrack statistics are not in /proc/net/stat/nf_conntrack on this kernel and ctnetlink is not read; insert_failed and drop are not watched")
		return nil, ConntrackSourceNone, &f, nil
	}
	st, err := c.nl.Stats(ctx)
	if err != nil {
		msg := fmt.Sprintf("per-CPU conntrack statistics are not in /proc/net/stat/nf_conntrack on this kernel and reading them over ctnetlink failed (%v); insert_failed and drop are not watched", err)
		if errors.Is(err, syscall.EPERM) {
			msg += ": give node-doctor CAP_NET_ADMIN (ctnetlink answers nothing without it)"
		}
		f := finding(check.SeverityWarning, "ConntrackStatsUnavailable", msg)
		f.Details = map[string]string{"error": err.Error()}
		return nil, ConntrackSourceNone, &f, nil
	}
	return &st, ConntrackSourceCtnetlink, nil, nil
}

// Describe implements prometheus.Collector.
func (c *conntrackCheck) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.entriesDesc
	ch <- c.limitDesc
	ch <- c.statDesc
	ch <- c.sourceDesc
}

// Collect implements prometheus.Collector: the values of the last run.
func (c *conntrackCheck) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.count == nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.entriesDesc, prometheus.GaugeValue, float64(c.count.Entries))
	ch <- prometheus.MustNewConstMetric(c.limitDesc, prometheus.GaugeValue, float64(c.count.Max))
	for _, src := range []string{ConntrackSourceProcfs, ConntrackSourceCtnetlink, ConntrackSourceNone} {
		v := 0.0
		if src == c.source {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(c.sourceDesc, prometheus.GaugeValue, v, src)
	}
	if c.cur == nil {
		return
	}
	for _, k := range c.cur.counters() {
		ch <- prometheus.MustNewConstMetric(c.statDesc, prometheus.CounterValue, float64(k.v), k.name)
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
