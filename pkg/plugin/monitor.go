package plugin

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/node-doctor/node-doctor/pkg/check"
)

// DefaultMaxPending bounds the temporary findings a monitor keeps between
// two runs of the check; more are dropped and counted.
const DefaultMaxPending = 1000

// condState is one condition as NPD's custom plugin monitor keeps it:
// False with the file's reason and message until a permanent rule says
// otherwise.
type condState struct {
	def     Condition
	status  Status // OK: False, NonOK: True, Unknown: Unknown
	reason  string
	message string
	since   time.Time
}

// runner runs one monitor file's rules and keeps what they said.
type runner struct {
	mon *Monitor
	clk clock.Clock
	// sem holds one token per script running, at most concurrency.
	sem chan struct{}

	mu      sync.Mutex
	conds   []condState
	pending []check.Finding
	dropped int
	runs    map[Status]uint64
	// timeouts and droppedTotal count since the start, for metrics.
	timeouts, droppedTotal uint64
	last                   map[int]Status // by rule index, for logging changes only

	first     chan struct{} // closed when the first batch has answered
	firstOnce sync.Once
}

func newRunner(m *Monitor, clk clock.Clock) *runner {
	r := &runner{mon: m, clk: clk, sem: make(chan struct{}, m.Concurrency), runs: map[Status]uint64{}, last: map[int]Status{}, first: make(chan struct{})}
	now := clk.Now()
	for _, c := range m.Conditions {
		r.conds = append(r.conds, condState{def: c, status: OK, reason: c.Reason, message: c.Message, since: now})
	}
	return r
}

// runBatch runs rules, at most concurrency at a time, and waits for all of
// them. Results are applied as they come. It returns early, without
// starting the rest, when ctx is done.
func (r *runner) runBatch(ctx context.Context, rules []*Rule) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, rule := range rules {
		select {
		case r.sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		wg.Go(func() {
			defer func() { <-r.sem }()
			res := Execute(ctx, rule.Path, rule.Args, rule.Timeout, r.mon.MaxOutputLength)
			if ctx.Err() != nil {
				return // stopping: says nothing about the node
			}
			r.logResult(rule, res)
			r.apply(rule, res, r.clk.Now())
		})
	}
}

func (r *runner) logResult(rule *Rule, res Result) {
	attrs := []any{"source", r.mon.Source, "rule", rule.String(), "path", rule.Path, "status", res.Status.String(),
		"exit_code", res.ExitCode, "duration", res.Duration.Round(time.Millisecond), "message", res.Message}
	if res.Stderr != "" {
		attrs = append(attrs, "stderr", res.Stderr)
	}
	r.mu.Lock()
	prev, seen := r.last[rule.Index]
	r.last[rule.Index] = res.Status
	r.mu.Unlock()
	switch {
	case seen && prev == res.Status || !seen && res.Status == OK:
		slog.Debug("plugin ran", attrs...)
	default:
		slog.Info("plugin answer changed", attrs...)
	}
}

// apply records one result as NPD's custom plugin monitor does: a
// temporary rule that did not say OK gives a warning (NPD's event); a
// permanent rule moves its condition.
func (r *runner) apply(rule *Rule, res Result, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.runs[res.Status]++
	if res.TimedOut {
		r.timeouts++
	}
	if !rule.Permanent {
		if res.Status == OK {
			return
		}
		if len(r.pending) >= DefaultMaxPending {
			r.dropped++
			r.droppedTotal++
			return
		}
		r.pending = append(r.pending, check.Finding{
			Severity: check.SeverityWarning,
			Reason:   rule.Reason,
			Message:  res.Message,
			Time:     now,
			Details:  r.details(rule, res),
		})
		return
	}
	for i := range r.conds {
		if r.conds[i].def.Type == rule.Condition {
			r.conds[i].update(rule, res, now, r.mon.MessageChange)
			return
		}
	}
}

// update moves the condition as NPD's generateStatus does.
func (c *condState) update(rule *Rule, res Result, now time.Time, messageChange bool) {
	healthyOrResult := func() string {
		if res.Status == OK {
			return c.def.Message
		}
		return res.Message // unknown: the script's words help to debug
	}
	var reason, message string
	switch {
	case c.status == NonOK && res.Status != NonOK: // True to False or Unknown
		reason, message = c.def.Reason, healthyOrResult()
	case c.status != NonOK && res.Status == NonOK: // to True
		reason, message = rule.Reason, res.Message
	case c.status != res.Status: // False to Unknown or back
		reason, message = c.def.Reason, healthyOrResult()
	case c.status == NonOK && (c.reason != rule.Reason || messageChange && c.message != res.Message):
		reason, message = rule.Reason, res.Message
	default:
		return
	}
	c.status, c.reason, c.message, c.since = res.Status, reason, message, now
}

func (r *runner) details(rule *Rule, res Result) map[string]string {
	return map[string]string{"source": r.mon.Source, "path": rule.Path, "exit_code": strconv.Itoa(res.ExitCode), "file": r.mon.File}
}

// findings reports every condition and the temporary findings since the
// last call.
func (r *runner) findings() []check.Finding {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]check.Finding, 0, len(r.conds)+len(r.pending)+1)
	for _, c := range r.conds {
		f := check.Finding{Condition: c.def.Type, Reason: c.reason, Message: c.message, Time: c.since,
			Details: map[string]string{"source": r.mon.Source, "file": r.mon.File}}
		switch c.status {
		case OK:
			f.Severity = check.SeverityOK
		case NonOK:
			f.Severity = check.SeverityProblem
		default:
			f.Severity, f.Unknown = check.SeverityWarning, true
		}
		out = append(out, f)
	}
	out = append(out, r.pending...)
	r.pending = nil
	if r.dropped > 0 {
		out = append(out, check.Finding{
			Severity: check.SeverityWarning,
			Reason:   "PluginFindingsDropped",
			Message:  fmt.Sprintf("%s: %d more plugin problems than the %d kept between two runs were dropped", r.mon.Source, r.dropped, DefaultMaxPending),
			Details:  map[string]string{"source": r.mon.Source, "file": r.mon.File},
		})
		r.dropped = 0
	}
	return out
}

// follow runs every rule at once, then each at its interval, until ctx is
// done. Rules with the same interval run as one batch, and a batch still
// running when its interval comes round again is not started twice.
func (r *runner) follow(ctx context.Context, clk clock.WithTicker) {
	r.runBatch(ctx, r.mon.Rules)
	r.firstOnce.Do(func() { close(r.first) })
	groups := map[time.Duration][]*Rule{}
	for _, rule := range r.mon.Rules {
		groups[rule.Interval] = append(groups[rule.Interval], rule)
	}
	var wg sync.WaitGroup
	for interval, rules := range groups {
		wg.Go(func() {
			t := clk.NewTicker(interval)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C():
					r.runBatch(ctx, rules)
				}
			}
		})
	}
	wg.Wait()
}
