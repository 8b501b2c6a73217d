package netcheck

import "github.com/node-doctor/node-doctor/pkg/check"

// finding builds a node-level finding that drives NetworkConfigProblem.
func finding(sev check.Severity, reason, msg string) check.Finding {
	return check.Finding{Severity: sev, Condition: check.ConditionNetworkConfig, Reason: reason, Message: msg}
}
