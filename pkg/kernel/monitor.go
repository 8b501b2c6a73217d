package kernel

import (
	"bytes"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/utils/clock"

	"github.com/node-doctor/node-doctor/pkg/check"
)

// DefaultMaxPending bounds the findings kept between two runs of the check;
// more are dropped and counted, and the next run says so.
const DefaultMaxPending = 1000

// maxQuote bounds how much of a log line goes into a finding's message.
const maxQuote = 200

// Stats are a monitor's counters since it was created.
type Stats struct {
	Lines       uint64
	Matches     uint64
	Dropped     uint64
	Overruns    uint64
	ParseErrors uint64
	// MatchesByReason counts matches per rule reason.
	MatchesByReason map[string]uint64
}

// Monitor applies one rule set to the lines of its source and keeps what it
// found until the check collects it: temporary matches as findings (up to
// a bound), permanent ones as condition state.
type Monitor struct {
	set        *RuleSet
	clk        clock.PassiveClock
	maxPending int
	m          *matcher // used only by the goroutine feeding lines

	lineTime time.Time // of the line being matched
	// eventsSince hides temporary matches of older lines: permanent rules
	// see all the log there is, to rebuild conditions after a restart,
	// while events come only from the lookback window.
	eventsSince time.Time
	// ignoreBefore drops lines logged before it altogether (NPD's delay
	// after boot).
	ignoreBefore time.Time
	// absent is why the followed log is not there, while it is not.
	absent atomic.Pointer[error]

	caughtUp     chan struct{} // closed once the log has been read up to now
	caughtUpOnce sync.Once

	lines, overruns, parseErrors atomic.Uint64

	mu           sync.Mutex
	matches      uint64
	dropped      uint64
	byReason     map[string]uint64
	pending      []check.Finding
	droppedSince map[string]uint64 // reason -> dropped since the last collect
	overrunsSeen uint64            // overruns already reported
	conds        map[string]*condState
	freq         map[*Rule][]time.Time
}

type condState struct {
	active  bool
	rule    *Rule
	since   time.Time
	last    time.Time
	count   uint64
	message string
	details map[string]string
}

// NewMonitor returns a monitor for set; maxPending <= 0 means
// DefaultMaxPending.
func NewMonitor(set *RuleSet, clk clock.PassiveClock, maxPending int) *Monitor {
	if maxPending <= 0 {
		maxPending = DefaultMaxPending
	}
	return &Monitor{
		set: set, clk: clk, maxPending: maxPending, m: newMatcher(set),
		byReason: map[string]uint64{}, droppedSince: map[string]uint64{},
		conds: map[string]*condState{}, freq: map[*Rule][]time.Time{},
		caughtUp: make(chan struct{}),
	}
}

// SetEventWindow makes the monitor ignore temporary matches of lines logged
// before since; permanent rules still see them. Call before feeding lines.
func (mo *Monitor) SetEventWindow(since time.Time) { mo.eventsSince = since }

// SetIgnoreBefore makes the monitor drop lines logged before t, for rules
// and conditions alike. Call before feeding lines.
func (mo *Monitor) SetIgnoreBefore(t time.Time) { mo.ignoreBefore = t }

// HandleAbsent implements AbsenceSink.
// It logs each change, so a missing log is said once, not every poll.
func (mo *Monitor) HandleAbsent(err error) {
	if err == nil {
		if mo.absent.Swap(nil) != nil {
			slog.Info("log appeared; its rules apply now", "ruleFile", mo.set.File)
		}
		return
	}
	if mo.absent.Swap(&err) == nil {
		slog.Info("log not on this node; its rules wait for it", "ruleFile", mo.set.File, "err", err)
	}
}

// Absent is why the followed log is missing; nil when it is there.
func (mo *Monitor) Absent() error {
	if p := mo.absent.Load(); p != nil {
		return *p
	}
	return nil
}

// HandleCaughtUp implements Sink.
func (mo *Monitor) HandleCaughtUp() { mo.caughtUpOnce.Do(func() { close(mo.caughtUp) }) }

// CaughtUp is closed once the source has handed over everything that was
// in the log when it started.
func (mo *Monitor) CaughtUp() <-chan struct{} { return mo.caughtUp }

// HandleLine implements Sink.
func (mo *Monitor) HandleLine(l Line) {
	mo.lines.Add(1)
	mo.lineTime = l.Time
	if !l.Time.IsZero() && l.Time.Before(mo.ignoreBefore) {
		return
	}
	// A file source skips on the whole line, before parsing it.
	if mo.set.Plugin != PluginFilelog && containsAny(l.Text, mo.set.SkipList) {
		return
	}
	mo.m.process(l.Text, mo)
}

func containsAny(b []byte, subs [][]byte) bool {
	for _, s := range subs {
		if bytes.Contains(b, s) {
			return true
		}
	}
	return false
}

// HandleOverrun implements Sink.
func (mo *Monitor) HandleOverrun() { mo.overruns.Add(1) }

// HandleParseError implements Sink.
func (mo *Monitor) HandleParseError() { mo.parseErrors.Add(1) }

// Stats returns the counters.
func (mo *Monitor) Stats() Stats {
	mo.mu.Lock()
	defer mo.mu.Unlock()
	return Stats{
		Lines: mo.lines.Load(), Matches: mo.matches, Dropped: mo.dropped,
		Overruns: mo.overruns.Load(), ParseErrors: mo.parseErrors.Load(),
		MatchesByReason: maps.Clone(mo.byReason),
	}
}

func (mo *Monitor) when() time.Time {
	if mo.lineTime.IsZero() {
		return mo.clk.Now()
	}
	return mo.lineTime
}

func (mo *Monitor) onMatch(r *Rule, text []byte, sub []int) {
	t := mo.when()
	if !r.Permanent && t.Before(mo.eventsSince) {
		return
	}
	mo.mu.Lock()
	defer mo.mu.Unlock()
	mo.matches++
	mo.byReason[r.Reason]++
	if r.Count > 1 && !mo.frequent(r, t) {
		return
	}
	if r.Permanent {
		st := mo.conds[r.Condition]
		if st == nil || !st.active {
			// The first match describes the problem; repeats only count.
			st = &condState{active: true, rule: r, since: t}
			st.message, st.details = mo.describe(r, text, sub)
			mo.conds[r.Condition] = st
		}
		st.last = t
		st.count++
		return
	}
	if len(mo.pending) >= mo.maxPending {
		mo.dropped++
		mo.droppedSince[r.Reason]++
		return
	}
	msg, details := mo.describe(r, text, sub)
	mo.pending = append(mo.pending, check.Finding{
		Severity: r.Severity, Reason: r.Reason, Message: msg, Details: details, Time: t,
	})
}

// frequent records a match of a rule with a count and reports whether it
// has now matched Count times within Window; firing starts a new count.
func (mo *Monitor) frequent(r *Rule, t time.Time) bool {
	ts := mo.freq[r]
	keep := ts[:0]
	for _, x := range ts {
		if t.Sub(x) < r.Window {
			keep = append(keep, x)
		}
	}
	keep = append(keep, t)
	if len(keep) >= r.Count {
		mo.freq[r] = keep[:0]
		return true
	}
	mo.freq[r] = keep
	return false
}

func (mo *Monitor) onRecovery(r *Rule, text []byte) {
	mo.mu.Lock()
	defer mo.mu.Unlock()
	if st := mo.conds[r.Condition]; st != nil && st.active && st.rule == r {
		st.active = false
	}
}

// describe builds a finding's message and details from a match.
func (mo *Monitor) describe(r *Rule, text []byte, sub []int) (string, map[string]string) {
	log := Unescape(text)
	details := map[string]string{"log": log, "source": mo.set.Name}
	if sub == nil {
		sub = r.re.FindSubmatchIndex(text)
	}
	if sub != nil {
		for i, name := range r.re.SubexpNames() {
			if name != "" && 2*i+1 < len(sub) && sub[2*i] >= 0 {
				details[name] = string(text[sub[2*i]:sub[2*i+1]])
			}
		}
	}
	addCgroupIDs(details)
	var msg string
	if r.Message != "" {
		msg = string(r.re.Expand(nil, []byte(r.Message), text, sub))
	} else {
		msg = orLabel(mo.set.Label) + ": " + quote(log)
	}
	if r.MessageSuffix != "" {
		msg += r.MessageSuffix
	}
	if r.Count > 1 {
		msg = fmt.Sprintf("%s (%d times within %s)", msg, r.Count, r.Window)
	}
	return msg, details
}

func orLabel(l string) string {
	if l == "" {
		return "kernel log"
	}
	return l
}

// quote shortens a log excerpt to one line for a message.
func quote(s string) string {
	s = strings.ReplaceAll(s, "\n", " | ")
	if len(s) > maxQuote {
		s = s[:maxQuote] + "..."
	}
	return s
}

// Findings returns what was found since the last call: the temporary
// findings, one finding per condition of the rule set (problem while active,
// ok otherwise), and warnings about lost lines.
func (mo *Monitor) Findings(now time.Time) []check.Finding {
	mo.mu.Lock()
	defer mo.mu.Unlock()
	out := mo.pending
	mo.pending = nil
	if len(mo.droppedSince) > 0 {
		var n uint64
		var parts []string
		for _, reason := range slices.Sorted(maps.Keys(mo.droppedSince)) {
			n += mo.droppedSince[reason]
			parts = append(parts, fmt.Sprintf("%s=%d", reason, mo.droppedSince[reason]))
		}
		out = append(out, check.Finding{
			Severity: check.SeverityWarning, Reason: "KernelLogFindingsDropped",
			Message: fmt.Sprintf("%d more kernel log findings (%s) than the %d kept between runs were dropped; the log is flooding, look at the ones kept",
				n, strings.Join(parts, ", "), mo.maxPending),
			Details: map[string]string{"source": mo.set.Name, "dropped": fmt.Sprint(n)},
		})
		clear(mo.droppedSince)
	}
	if ov := mo.overruns.Load(); ov > mo.overrunsSeen {
		out = append(out, check.Finding{
			Severity: check.SeverityWarning, Reason: "KernelLogOverrun",
			Message: fmt.Sprintf("the kernel overwrote %d log records before node-doctor read them, so problems may have been missed; the kernel log is flooding (see dmesg) or log_buf_len is too small",
				ov-mo.overrunsSeen),
			Details: map[string]string{"source": mo.set.Name},
		})
		mo.overrunsSeen = ov
	}
	for _, c := range mo.set.Conditions {
		st := mo.conds[c.Type]
		if st != nil && st.active && st.rule.QuietPeriod > 0 && now.Sub(st.last) >= st.rule.QuietPeriod {
			st.active = false
		}
		if st == nil || !st.active {
			out = append(out, check.Finding{Severity: check.SeverityOK, Condition: c.Type, Reason: c.Reason, Message: c.Message})
			continue
		}
		d := maps.Clone(st.details)
		d["first_seen"] = st.since.UTC().Format(time.RFC3339)
		d["last_seen"] = st.last.UTC().Format(time.RFC3339)
		d["count"] = fmt.Sprint(st.count)
		msg := st.message
		switch {
		case st.rule.Recovery != nil && st.rule.QuietPeriod > 0:
			msg += fmt.Sprintf("; clears when the kernel logs a recovery or after %s without a repeat", st.rule.QuietPeriod)
		case st.rule.QuietPeriod > 0:
			msg += fmt.Sprintf("; clears after %s without a repeat", st.rule.QuietPeriod)
		case st.rule.Recovery != nil:
			msg += "; clears when the kernel logs a recovery"
		}
		out = append(out, check.Finding{
			Severity: st.rule.Severity, Condition: c.Type, Reason: st.rule.Reason, Message: msg, Details: d, Time: st.since,
		})
	}
	return out
}
