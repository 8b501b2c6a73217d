package check

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Check inspects one aspect of the node.
//
// Run returns the findings, or an error when the check could not run. A check
// that does not apply to this node returns a NotApplicableError. Run must
// honour ctx; the runner abandons runs that outlive their timeout.
type Check interface {
	Run(ctx context.Context) ([]Finding, error)
}

// Func adapts a function to Check.
type Func func(ctx context.Context) ([]Finding, error)

// Run calls f.
func (f Func) Run(ctx context.Context) ([]Finding, error) { return f(ctx) }

// Starter is implemented by checks that watch a stream in the background
// (e.g. a log) and report what they saw when run. The agent starts them once
// before the first run; the one-shot report does not, so Run must also work
// unstarted.
type Starter interface {
	Start(ctx context.Context) error
}

// ConditionLister is implemented by checks whose condition types depend on
// their settings (rule files); it is asked after the config is loaded, and
// its types add to Definition.Conditions.
type ConditionLister interface {
	ConditionTypes() []string
}

// ConditionTypes returns every condition type the check may drive.
func (d *Definition) ConditionTypes() []string {
	out := append([]string(nil), d.Conditions...)
	if l, ok := d.Check.(ConditionLister); ok {
		for _, t := range l.ConditionTypes() {
			if !slices.Contains(out, t) {
				out = append(out, t)
			}
		}
	}
	return out
}

// RuleLister is implemented by checks whose rules come from
// node-problem-detector files: NPD starts problem_counter at 0 for every
// rule's reason and problem_gauge at 0 for every permanent rule, so that
// dashboards and rate() see the series before the first problem.
type RuleLister interface {
	Rules() []RuleReason
}

// RuleReason is one rule's reason; Condition is the type a permanent rule
// sets, empty for a temporary one.
type RuleReason struct {
	Condition, Reason string
}

// Validator is implemented by check settings that need range checks.
type Validator interface {
	Validate() error
}

// Definition is a check plus what the runner and the config need to know
// about it.
type Definition struct {
	Name        string
	Area        string
	Description string
	Interval    time.Duration
	Timeout     time.Duration
	// Conditions lists the node condition types the check may drive.
	Conditions []string
	// Settings points at the check's tunables with their defaults filled in;
	// the config loader decodes into it before the check first runs. Nil when
	// the check has none.
	Settings any
	Check    Check
}

// NotApplicableError says a check has nothing to inspect on this node.
type NotApplicableError struct{ Reason string }

func (e *NotApplicableError) Error() string { return "not applicable: " + e.Reason }

// NotApplicable returns a NotApplicableError with a formatted reason.
func NotApplicable(format string, args ...any) error {
	return &NotApplicableError{Reason: fmt.Sprintf(format, args...)}
}

// IsNotApplicable reports whether err says the check does not apply, and why.
func IsNotApplicable(err error) (string, bool) {
	var na *NotApplicableError
	if errors.As(err, &na) {
		return na.Reason, true
	}
	return "", false
}
