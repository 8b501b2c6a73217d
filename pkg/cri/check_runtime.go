package cri

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/node-doctor/node-doctor/pkg/check"
)

// RuntimeCheck reports whether the container runtime answers over CRI at
// all: the first thing to rule out on a sick node (crictl version).
func RuntimeCheck(src Snapshotter) check.Definition {
	return check.Definition{
		Name:        "cri-runtime",
		Area:        Area,
		Description: "the container runtime answers CRI calls (crictl version) within the call timeout",
		Interval:    checkInterval,
		Timeout:     checkTimeout,
		Conditions:  []string{check.ConditionContainerRuntime},
		Check: check.Func(func(ctx context.Context) ([]check.Finding, error) {
			s, err := src.Snapshot(ctx)
			return runtimeFindings(s, err)
		}),
	}
}

func runtimeFindings(s *Snapshot, err error) ([]check.Finding, error) {
	const cond = check.ConditionContainerRuntime
	var nr *NoRuntimeError
	switch {
	case errors.As(err, &nr):
		return nil, check.NotApplicable("no container runtime on this machine (no socket at %s)", check.Abbreviate(nr.Tried, 3))
	case err != nil && (status.Code(err) == codes.DeadlineExceeded || errors.Is(err, context.DeadlineExceeded)):
		return []check.Finding{{Severity: check.SeverityProblem, Condition: cond, Reason: "RuntimeUnresponsive", Message: fmt.Sprintf(
			"the container runtime is hung or overloaded: %v; kubelet will soon report PLEG not healthy and the node NotReady; "+
				"check the runtime's log (journalctl -u containerd / crio), stuck shims and D-state processes, and restart the runtime", err)}}, nil
	case err != nil && isAnswer(err):
		return []check.Finding{{Severity: check.SeverityProblem, Condition: cond, Reason: "RuntimeErrors", Message: fmt.Sprintf(
			"the container runtime answers but fails: %v; check the runtime's log", err)}}, nil
	case err != nil:
		return []check.Finding{{Severity: check.SeverityProblem, Condition: cond, Reason: "RuntimeUnreachable", Message: fmt.Sprintf(
			"cannot talk to the container runtime: %v; is it running (systemctl status containerd / crio) and is this the socket kubelet uses (--container-runtime-endpoint)?", err)}}, nil
	}
	v := s.Version
	at := ""
	if s.Endpoint != "" {
		at = " at " + s.Endpoint
	}
	f := ok(cond, "RuntimeResponding", fmt.Sprintf("%s %s (CRI %s) answers%s: %d pod sandboxes, %d containers, %d images",
		v.GetRuntimeName(), v.GetRuntimeVersion(), v.GetRuntimeApiVersion(), at, len(s.Sandboxes), len(s.Containers), len(s.Images)))
	out := []check.Finding{f}
	if len(s.Partial) > 0 {
		out = append(out, check.Finding{Severity: check.SeverityWarning, Condition: cond, Reason: "RuntimeCallsFailing", Message: fmt.Sprintf(
			"%d CRI calls failed in the last snapshot, first: %v; the runtime is partly broken, check its log", len(s.Partial), s.Partial[0])})
	}
	return out, nil
}

// isAnswer reports whether err is an error the runtime sent back, as opposed
// to no connection or no answer at all.
func isAnswer(err error) bool {
	st, ok := status.FromError(err)
	if !ok {
		return false
	}
	switch st.Code() {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		return false
	}
	return true
}
