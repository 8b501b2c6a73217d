package check

import (
	"fmt"
	"slices"
	"strings"
)

// ConditionStatus is a node condition's status, as Kubernetes spells it.
type ConditionStatus string

// Condition statuses.
const (
	ConditionTrue    ConditionStatus = "True"
	ConditionFalse   ConditionStatus = "False"
	ConditionUnknown ConditionStatus = "Unknown"
)

// ConditionState is what the latest results say of one condition type.
type ConditionState struct {
	Status ConditionStatus
	Reason string
	// Messages are the problems' messages (True), why checks could not
	// run (Unknown), or the one healthy message (False).
	Messages []string
}

// StateOf computes condition type t from the latest results of the checks
// that drive it: True with the first problem's reason when any found a
// problem; Unknown when none did but one could not run ("CheckFailed") or
// could not tell (a finding marked Unknown: its reason when it is the one
// check's only one); False otherwise, with the single healthy reason of a type one check
// drives (NPD's KernelHasNoDeadlock) or "No<Type>". ok is false until every
// check has run once.
func StateOf(t string, checks []string, latest map[string]Result) (s ConditionState, ok bool) {
	var problems, failed, okReasons []string
	var unknown []Finding
	reason, okMessage := "", ""
	for _, name := range checks {
		res, ran := latest[name]
		if !ran {
			return ConditionState{}, false
		}
		if res.Status == StatusError {
			failed = append(failed, fmt.Sprintf("%s: %v", name, res.Err))
			continue
		}
		for _, f := range res.Findings {
			if f.Condition != t {
				continue
			}
			if f.Unknown {
				unknown = append(unknown, f)
				continue
			}
			switch f.Severity {
			case SeverityProblem:
				if reason == "" {
					reason = f.Reason
				}
				problems = append(problems, f.Message)
			case SeverityOK:
				if !slices.Contains(okReasons, f.Reason) {
					okReasons = append(okReasons, f.Reason)
					okMessage = f.Message
				}
			}
		}
	}
	switch {
	case len(problems) > 0:
		return ConditionState{Status: ConditionTrue, Reason: reason, Messages: problems}, true
	case len(failed) > 0:
		return ConditionState{Status: ConditionUnknown, Reason: "CheckFailed", Messages: append([]string{"node-doctor could not run"}, failed...)}, true
	case len(unknown) == 1 && len(checks) == 1:
		return ConditionState{Status: ConditionUnknown, Reason: unknown[0].Reason, Messages: []string{unknown[0].Message}}, true
	case len(unknown) > 0:
		msgs := []string{"node-doctor could not tell"}
		for _, f := range unknown {
			msgs = append(msgs, f.Check+": "+f.Message)
		}
		return ConditionState{Status: ConditionUnknown, Reason: "CheckFailed", Messages: msgs}, true
	case len(checks) == 1 && len(okReasons) == 1:
		return ConditionState{Status: ConditionFalse, Reason: okReasons[0], Messages: []string{okMessage}}, true
	}
	return ConditionState{Status: ConditionFalse, Reason: "No" + t, Messages: []string{"node-doctor checks " + strings.Join(checks, ", ") + " found no problem"}}, true
}

// MergeConditions keeps one finding per condition, the worst, when several
// sources (rule files, monitor files) of one check drive the same
// condition; findings without a condition are kept as they are.
func MergeConditions(fs []Finding) []Finding {
	at := map[string]int{}
	out := fs[:0]
	for _, f := range fs {
		if f.Condition == "" {
			out = append(out, f)
			continue
		}
		i, ok := at[f.Condition]
		switch {
		case !ok:
			at[f.Condition] = len(out)
			out = append(out, f)
		case f.Severity > out[i].Severity:
			out[i] = f
		}
	}
	return out
}
