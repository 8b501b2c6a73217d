package cri

import (
	"fmt"

	"github.com/node-doctor/node-doctor/pkg/check"
)

// RuntimeReadyCheck reports the runtime's own RuntimeReady condition (the
// first half of crictl info): false means kubelet cannot run any pod.
func RuntimeReadyCheck(src Snapshotter) check.Definition {
	return check.Definition{
		Name:        "cri-runtime-ready",
		Area:        Area,
		Description: "the container runtime reports RuntimeReady=true",
		Interval:    checkInterval,
		Timeout:     checkTimeout,
		Conditions:  []string{check.ConditionContainerRuntime},
		Check:       fromSnapshot(src, runtimeReadyFindings),
	}
}

func runtimeReadyFindings(s *Snapshot) []check.Finding {
	const cond = check.ConditionContainerRuntime
	c := s.Condition("RuntimeReady")
	switch {
	case c == nil:
		return []check.Finding{{Severity: check.SeverityWarning, Condition: cond, Reason: "RuntimeReadyMissing", Message: "the runtime's Status has no RuntimeReady condition; kubelet treats that as not ready; upgrade or fix the runtime's CRI plugin"}}
	case !c.GetStatus():
		return []check.Finding{{Severity: check.SeverityProblem, Condition: cond, Reason: "RuntimeNotReady", Message: fmt.Sprintf(
			"the container runtime reports RuntimeReady=false (%s: %s); kubelet will not start pods; check the runtime's log and restart it", orDash(c.GetReason()), orDash(c.GetMessage()))}}
	}
	return []check.Finding{ok(cond, "RuntimeReady", "the container runtime reports RuntimeReady=true")}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
