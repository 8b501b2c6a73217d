// Package plugin runs node-problem-detector's custom plugin monitors
// ("plugin": "custom", NPD's --config.custom-plugin-monitor files) with
// NPD's semantics: each rule's script on its interval, its exit code (0 OK,
// 1 problem, anything else unknown) and its stdout as the message.
package plugin

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/node-doctor/node-doctor/pkg/check"
)

// CheckName is the name of the custom plugin check.
const CheckName = "custom-plugin"

// Settings tunes the custom-plugin check.
type Settings struct {
	// Monitors are NPD custom plugin monitor files in the agent's
	// filesystem, as NPD's --config.custom-plugin-monitor takes them.
	Monitors []string `yaml:"monitors"`
}

// Validate loads every monitor file and looks at every script it runs, so
// that a bad file or a missing script fails the config.
func (s *Settings) Validate() error {
	_, err := s.load()
	return err
}

func (s *Settings) load() ([]*Monitor, error) {
	var errs []error
	var out []*Monitor
	for _, f := range s.Monitors {
		m, err := LoadMonitor(f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, m)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("monitors: %w", err)
	}
	return out, nil
}

// Checker is the custom-plugin check. Started (by the agent) it runs every
// rule at its monitor's interval in the background and each run reports
// the conditions and what the temporary rules said since the last run;
// unstarted (the one-shot report) each run runs every rule once.
type Checker struct {
	clk      clock.WithTicker
	settings *Settings

	mu      sync.Mutex
	started bool
	runners []*runner
}

// Plugins returns the custom-plugin check; clk may be nil (the real clock).
func Plugins(clk clock.WithTicker) check.Definition {
	if clk == nil {
		clk = clock.RealClock{}
	}
	s := &Settings{}
	return check.Definition{
		Name:        CheckName,
		Area:        "plugin",
		Description: "node-problem-detector custom plugin monitors: each rule's script says OK (exit 0) or reports a problem (exit 1)",
		Interval:    10 * time.Second,
		Timeout:     10 * time.Second,
		Settings:    s,
		Check:       &Checker{clk: clk, settings: s},
	}
}

// ConditionTypes implements check.ConditionLister: the conditions of every
// configured monitor file.
func (c *Checker) ConditionTypes() []string {
	mons, err := c.settings.load()
	if err != nil {
		return nil // the config was validated; Run reports a broken file
	}
	var out []string
	for _, m := range mons {
		for _, cond := range m.Conditions {
			if !slices.Contains(out, cond.Type) {
				out = append(out, cond.Type)
			}
		}
	}
	return out
}

// Rules implements check.RuleLister: every rule of every configured
// monitor file, for NPD's problem metrics.
func (c *Checker) Rules() []check.RuleReason {
	mons, err := c.settings.load()
	if err != nil {
		return nil
	}
	var out []check.RuleReason
	for _, m := range mons {
		for _, r := range m.Rules {
			rr := check.RuleReason{Reason: r.Reason}
			if r.Permanent {
				rr.Condition = r.Condition
			}
			out = append(out, rr)
		}
	}
	return out
}

func (c *Checker) newRunners() ([]*runner, error) {
	if len(c.settings.Monitors) == 0 {
		return nil, check.NotApplicable("no custom plugin monitors configured (checks.%s.monitors)", CheckName)
	}
	mons, err := c.settings.load()
	if err != nil {
		return nil, err
	}
	out := make([]*runner, len(mons))
	for i, m := range mons {
		out[i] = newRunner(m, c.clk)
	}
	return out, nil
}

// Start implements check.Starter: every monitor runs its rules until ctx is
// done.
func (c *Checker) Start(ctx context.Context) error {
	rs, err := c.newRunners()
	if _, na := check.IsNotApplicable(err); na {
		return nil // Run says so
	}
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.started, c.runners = true, rs
	c.mu.Unlock()
	for _, r := range rs {
		go r.follow(ctx, c.clk)
	}
	return nil
}

// Run implements check.Check.
func (c *Checker) Run(ctx context.Context) ([]check.Finding, error) {
	c.mu.Lock()
	started, rs := c.started, c.runners
	c.mu.Unlock()
	if !started {
		var err error
		if rs, err = c.newRunners(); err != nil {
			return nil, err
		}
		var wg sync.WaitGroup
		for _, r := range rs {
			wg.Go(func() { r.runBatch(ctx, r.mon.Rules) })
		}
		wg.Wait()
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("running plugins: %w", err)
		}
	}
	var out []check.Finding
	for _, r := range rs {
		if started && r.mon.SkipInitialStatus {
			// NPD reports nothing before the first answers: wait for them,
			// so a restart does not report a True condition as False.
			select {
			case <-r.first:
			case <-ctx.Done():
				return nil, fmt.Errorf("%s: waiting for the first plugin results: %w", r.mon.File, ctx.Err())
			}
		}
		out = append(out, r.findings()...)
	}
	return check.MergeConditions(out), nil
}
