// Package check is node-doctor's check framework: what a check is, what it
// returns, and the runner that executes checks on their intervals.
package check

import (
	"fmt"
	"time"
)

// Severity grades one finding.
type Severity int

// Severities, in increasing order of badness.
const (
	SeverityOK Severity = iota
	SeverityWarning
	SeverityProblem
)

var severityNames = [...]string{"ok", "warning", "problem"}

func (s Severity) String() string {
	if s < 0 || int(s) >= len(severityNames) {
		return fmt.Sprintf("severity(%d)", int(s))
	}
	return severityNames[s]
}

// MarshalText renders the severity as its lower-case name.
func (s Severity) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText parses a lower-case severity name.
func (s *Severity) UnmarshalText(b []byte) error {
	for i, n := range severityNames {
		if n == string(b) {
			*s = Severity(i)
			return nil
		}
	}
	return fmt.Errorf("unknown severity %q (want ok, warning or problem)", b)
}

// Object kinds a finding can be about. The zero Object is the node itself.
const (
	KindNode      = "Node"
	KindPod       = "Pod"
	KindContainer = "Container"
	KindService   = "Service"
)

// Object names what a finding is about.
type Object struct {
	Kind      string `json:"kind,omitempty" yaml:"kind,omitempty"`
	Namespace string `json:"namespace,omitempty" yaml:"namespace,omitempty"`
	Name      string `json:"name,omitempty" yaml:"name,omitempty"`
	UID       string `json:"uid,omitempty" yaml:"uid,omitempty"`
	Container string `json:"container,omitempty" yaml:"container,omitempty"`
}

// IsNode reports whether the object is the node itself.
func (o Object) IsNode() bool { return o.Kind == "" || o.Kind == KindNode }

func (o Object) String() string {
	if o.IsNode() {
		return "node"
	}
	s := o.Name
	if o.Namespace != "" {
		s = o.Namespace + "/" + s
	}
	if o.Container != "" {
		s += " container " + o.Container
	}
	return o.Kind + " " + s
}

// Finding is one observation of a check: healthy or not, with a reason a
// machine can key on and a message a person can act on.
type Finding struct {
	// Check is filled in by the runner.
	Check    string   `json:"check" yaml:"check"`
	Severity Severity `json:"severity" yaml:"severity"`
	// Condition is the node condition type this finding drives, if any.
	Condition string `json:"condition,omitempty" yaml:"condition,omitempty"`
	// Reason is CamelCase, stable, and low-cardinality.
	Reason string `json:"reason" yaml:"reason"`
	// Message is one line: what is wrong and how to fix it.
	Message string `json:"message" yaml:"message"`
	// LogExcerpt is what a workload itself wrote (a container's last log
	// line, its termination message): shown on the node, kept out of Events
	// unless the user enables it, since more people can read those.
	LogExcerpt string            `json:"log_excerpt,omitempty" yaml:"log_excerpt,omitempty"`
	Object     Object            `json:"object,omitzero" yaml:"object,omitempty"`
	Details    map[string]string `json:"details,omitempty" yaml:"details,omitempty"`
	// Unknown says the finding's condition could not be determined (a probe
	// timed out or failed): the condition is Unknown, as when the check
	// could not run, while the check's other findings still count.
	Unknown bool `json:"unknown,omitempty" yaml:"unknown,omitempty"`
	// Time is when the problem happened, when that differs from when the
	// check ran (e.g. a kernel log timestamp).
	Time time.Time `json:"time,omitzero" yaml:"time,omitempty"`
}
