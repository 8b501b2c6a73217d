package kernel

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/node-doctor/node-doctor/pkg/check"
)

// CheckName is the name of the kernel log check.
const CheckName = "kernel-log"

// Settings tunes the kernel-log check.
type Settings struct {
	// DefaultRules turns the built-in rules (on /dev/kmsg) on or off.
	DefaultRules bool `yaml:"defaultRules"`
	// RuleFiles are more rule files, in the agent's filesystem: NPD
	// system-log-monitor JSON (.json) or node-doctor YAML. Each names its
	// own log (plugin and logPath).
	RuleFiles []string `yaml:"ruleFiles"`
	// Lookback, when set, replaces every rule file's lookback: how far back
	// the log is read on start and by the one-shot check.
	Lookback time.Duration `yaml:"lookback"`
	// MaxPendingFindings bounds the temporary findings kept between runs per
	// rule file; more are dropped and counted.
	MaxPendingFindings int `yaml:"maxPendingFindings"`
}

// Validate loads the rule files, so that a bad one fails the config.
func (s *Settings) Validate() error {
	if s.Lookback < 0 || s.Lookback > 24*time.Hour {
		return fmt.Errorf("lookback: %s is out of range 0 to 24h", s.Lookback)
	}
	if s.MaxPendingFindings < 0 || s.MaxPendingFindings > 1000000 {
		return fmt.Errorf("maxPendingFindings: %d is out of range 0 to 1000000", s.MaxPendingFindings)
	}
	if _, err := s.ruleSets(); err != nil {
		return err
	}
	return nil
}

func (s *Settings) ruleSets() ([]*RuleSet, error) {
	var sets []*RuleSet
	if s.DefaultRules {
		set, err := DefaultRules()
		if err != nil {
			return nil, fmt.Errorf("defaultRules: %w", err)
		}
		sets = append(sets, set)
	}
	var errs []error
	for _, f := range s.RuleFiles {
		set, err := LoadRuleFile(f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		sets = append(sets, set)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("ruleFiles: %w", err)
	}
	if len(sets) == 0 {
		return nil, errors.New("defaultRules: no rules: turn defaultRules on or list ruleFiles")
	}
	for _, set := range sets {
		if s.Lookback > 0 {
			set.Lookback = s.Lookback
		}
	}
	return sets, nil
}

// LogChecker is the kernel-log check. Started (by the agent) it follows
// each rule file's log and reports what it saw since the last run;
// unstarted (the one-shot report) each run reads the lookback window.
type LogChecker struct {
	fs       fs.FS
	clk      clock.Clock
	settings *Settings
	attr     Attributor

	mu       sync.Mutex
	started  bool
	watchers []*watcher
}

// watcher follows one rule file's log.
type watcher struct {
	set *RuleSet
	src Source
	mon *Monitor

	mu  sync.Mutex
	err error // of the last read, until the next attempt

	failed   chan struct{} // closed when a read first fails
	failOnce sync.Once
}

// Log returns the kernel-log check reading the host filesystem fsys. attr,
// when not nil, names the pods of OOM kills and other cgroup-tagged lines.
func Log(fsys fs.FS, clk clock.Clock, attr Attributor) check.Definition {
	if clk == nil {
		clk = clock.RealClock{}
	}
	s := &Settings{DefaultRules: true, MaxPendingFindings: DefaultMaxPending}
	return check.Definition{
		Name:        CheckName,
		Area:        "kernel",
		Description: "the kernel log (/dev/kmsg, log files or the journal) shows no OOM kills, hung tasks, lockups, oopses, filesystem or I/O errors, or network table overflows",
		Interval:    30 * time.Second,
		Timeout:     20 * time.Second,
		Conditions:  []string{check.ConditionKernelDeadlock, check.ConditionReadonlyFilesystem, check.ConditionFrequentUnregisterNetDevice},
		Settings:    s,
		Check:       &LogChecker{fs: fsys, clk: clk, settings: s, attr: attr},
	}
}

func (c *LogChecker) newWatchers() ([]*watcher, error) {
	sets, err := c.settings.ruleSets()
	if err != nil {
		return nil, fmt.Errorf("kernel log rules: %w", err)
	}
	loc := HostLocation(c.fs)
	var boot time.Time
	out := make([]*watcher, len(sets))
	for i, set := range sets {
		mon := NewMonitor(set, c.clk, c.settings.MaxPendingFindings)
		if set.Delay > 0 {
			if boot.IsZero() {
				if boot, err = BootTime(c.fs, c.clk); err != nil {
					return nil, fmt.Errorf("%s: delay: %w", set.File, err)
				}
			}
			mon.SetIgnoreBefore(boot.Add(set.Delay))
		}
		out[i] = &watcher{set: set, src: c.source(set, loc), mon: mon, failed: make(chan struct{})}
	}
	return out, nil
}

func (c *LogChecker) source(set *RuleSet, loc *time.Location) Source {
	switch set.Plugin {
	case PluginFilelog:
		return &FileSource{FS: c.fs, Path: set.LogPath, Clock: c.clk, Parse: set.Parse, SkipList: set.SkipList, Location: loc}
	case PluginJournald:
		src := &JournalSource{FS: c.fs, Clock: c.clk, Identifiers: set.Identifiers, Units: set.Units}
		if set.LogPath != "" {
			src.Dirs = []string{set.LogPath}
		}
		return src
	}
	return &KmsgSource{FS: c.fs, Path: set.LogPath, Clock: c.clk}
}

// ConditionTypes implements check.ConditionLister: the conditions of the
// built-in rules and of every configured rule file.
func (c *LogChecker) ConditionTypes() []string {
	sets, err := c.settings.ruleSets()
	if err != nil {
		return nil // the config was validated; Run reports a broken file
	}
	var out []string
	for _, set := range sets {
		for _, cond := range set.Conditions {
			if !slices.Contains(out, cond.Type) {
				out = append(out, cond.Type)
			}
		}
	}
	return out
}

// Rules implements check.RuleLister: every rule of the built-in rules and
// of the configured rule files, for NPD's problem metrics.
func (c *LogChecker) Rules() []check.RuleReason {
	sets, err := c.settings.ruleSets()
	if err != nil {
		return nil
	}
	var out []check.RuleReason
	for _, set := range sets {
		for _, r := range set.Rules {
			rr := check.RuleReason{Reason: r.Reason}
			if r.Permanent {
				rr.Condition = r.Condition
			}
			out = append(out, rr)
		}
	}
	return out
}

// Start implements check.Starter: it follows every log until ctx is done,
// starting lookback before now so a restart neither replays old problems
// nor misses recent ones. A log that cannot be read is reported by Run and
// retried.
func (c *LogChecker) Start(ctx context.Context) error {
	ws, err := c.newWatchers()
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.started, c.watchers = true, ws
	c.mu.Unlock()
	for _, w := range ws {
		go w.follow(ctx, c.clk)
	}
	return nil
}

// Retry delays after a log read fails.
const (
	minRetry = 5 * time.Second
	maxRetry = 5 * time.Minute
)

func (w *watcher) follow(ctx context.Context, clk clock.Clock) {
	// Everything still in the log, for the conditions; events only from
	// the lookback window.
	var since time.Time
	w.mon.SetEventWindow(clk.Now().Add(-w.set.Lookback))
	delay := minRetry
	for {
		w.setErr(nil)
		err := w.src.Read(ctx, since, true, w.mon)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("stopped following")
		}
		w.setErr(err)
		w.failOnce.Do(func() { close(w.failed) })
		// Go on after the last line handled, not from the window again.
		if t := w.mon.lineTime; t.After(since) {
			since = t.Add(time.Nanosecond)
		}
		select {
		case <-ctx.Done():
			return
		case <-clk.After(delay):
		}
		delay = min(2*delay, maxRetry)
	}
}

func (w *watcher) setErr(err error) {
	w.mu.Lock()
	w.err = err
	w.mu.Unlock()
}

func (w *watcher) lastErr() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Run implements check.Check.
func (c *LogChecker) Run(ctx context.Context) ([]check.Finding, error) {
	c.mu.Lock()
	started, ws := c.started, c.watchers
	c.mu.Unlock()
	if !started {
		var err error
		if ws, err = c.newWatchers(); err != nil {
			return nil, err
		}
		now := c.clk.Now()
		for _, w := range ws {
			w.mon.SetEventWindow(now.Add(-w.set.Lookback))
			w.err = w.src.Read(ctx, time.Time{}, false, w.mon)
		}
	} else {
		// Right after a start, wait for the log to be read back, so that a
		// restart does not report a condition as cleared meanwhile.
		for _, w := range ws {
			select {
			case <-w.mon.CaughtUp():
			case <-w.failed:
			case <-ctx.Done():
				return nil, fmt.Errorf("%s: reading the log back: %w", w.src, ctx.Err())
			}
		}
	}
	var errs, missing []error
	var out []check.Finding
	var read []*watcher
	for _, w := range ws {
		err := w.lastErr()
		if err == nil {
			err = w.mon.Absent()
		}
		switch {
		case err == nil:
			read = append(read, w)
		case errors.Is(err, fs.ErrNotExist):
			missing = append(missing, err)
			out = append(out, absentFinding(w))
		default:
			errs = append(errs, fmt.Errorf("%s (%s): %w", w.src, w.set.File, err))
		}
	}
	if len(missing) == len(ws) {
		return nil, check.NotApplicable("no log to read under the host root (%v); in a pod, mount the host's /dev/kmsg and the logs the rule files name", errors.Join(missing...))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	now := c.clk.Now()
	for _, w := range read {
		out = append(out, w.mon.Findings(now)...)
	}
	attribute(ctx, c.attr, out)
	return check.MergeConditions(out), nil
}

// absentFinding says a rule file watches nothing because its log is not on
// this node (NPD would wait for it silently).
func absentFinding(w *watcher) check.Finding {
	return check.Finding{
		Severity: check.SeverityOK,
		Reason:   "LogAbsent",
		Message:  fmt.Sprintf("%s: %s is not on this node; its rules apply once it appears", w.set.Name, w.src),
		Details:  map[string]string{"ruleFile": w.set.File},
	}
}

// Stats returns each followed log's counters, by rule file name; empty
// until the check is started.
func (c *LogChecker) Stats() map[string]Stats {
	c.mu.Lock()
	ws := c.watchers
	c.mu.Unlock()
	out := make(map[string]Stats, len(ws))
	for _, w := range ws {
		out[w.set.Name] = w.mon.Stats()
	}
	return out
}
