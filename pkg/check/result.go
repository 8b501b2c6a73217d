package check

import (
	"encoding/json"
	"time"
)

// Status is the outcome of one check run.
type Status string

// Statuses. Error (could not run) and NotApplicable are distinct from a
// problem being found.
const (
	StatusOK            Status = "ok"
	StatusWarning       Status = "warning"
	StatusProblem       Status = "problem"
	StatusError         Status = "error"
	StatusNotApplicable Status = "not_applicable"
)

// Statuses lists every status, in report order.
var Statuses = []Status{StatusOK, StatusWarning, StatusProblem, StatusError, StatusNotApplicable}

// Result is what one run of one check produced.
type Result struct {
	Check    string
	Area     string
	Status   Status
	Findings []Finding
	// Err is set when the check could not run.
	Err error
	// NotApplicable says why the check does not apply, when it does not.
	NotApplicable string
	Start         time.Time
	Duration      time.Duration
}

// NewResult derives the status from what a check returned.
func NewResult(def *Definition, start time.Time, d time.Duration, findings []Finding, err error) Result {
	r := Result{Check: def.Name, Area: def.Area, Start: start, Duration: d}
	if reason, ok := IsNotApplicable(err); ok {
		r.Status, r.NotApplicable = StatusNotApplicable, reason
		return r
	}
	if err != nil {
		r.Status, r.Err = StatusError, err
		return r
	}
	worst := SeverityOK
	for i := range findings {
		findings[i].Check = def.Name
		worst = max(worst, findings[i].Severity)
	}
	r.Findings = findings
	r.Status = severityStatus(worst)
	return r
}

func severityStatus(s Severity) Status {
	switch s {
	case SeverityWarning:
		return StatusWarning
	case SeverityProblem:
		return StatusProblem
	}
	return StatusOK
}

// resultJSON is the stable wire form of a Result for reports.
type resultJSON struct {
	Check           string    `json:"check" yaml:"check"`
	Area            string    `json:"area" yaml:"area"`
	Status          Status    `json:"status" yaml:"status"`
	Error           string    `json:"error,omitempty" yaml:"error,omitempty"`
	NotApplicable   string    `json:"not_applicable_reason,omitempty" yaml:"not_applicable_reason,omitempty"`
	Start           time.Time `json:"start" yaml:"start"`
	DurationSeconds float64   `json:"duration_seconds" yaml:"duration_seconds"`
	Findings        []Finding `json:"findings" yaml:"findings"`
}

func (r Result) wire() resultJSON {
	w := resultJSON{
		Check: r.Check, Area: r.Area, Status: r.Status, NotApplicable: r.NotApplicable,
		Start: r.Start, DurationSeconds: r.Duration.Seconds(), Findings: r.Findings,
	}
	if r.Err != nil {
		w.Error = r.Err.Error()
	}
	if w.Findings == nil {
		w.Findings = []Finding{}
	}
	return w
}

// MarshalJSON renders the error as a string and the duration in seconds.
func (r Result) MarshalJSON() ([]byte, error) { return json.Marshal(r.wire()) }

// MarshalYAML mirrors MarshalJSON.
func (r Result) MarshalYAML() (any, error) { return r.wire(), nil }
