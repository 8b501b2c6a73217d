package cri

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"

	"github.com/node-doctor/node-doctor/pkg/check"
)

// RestartLoopCheck finds containers that exit with code 0 and are restarted
// again and again: the "start-background" mistake, where the command starts
// the real process in the background (a daemon, a trailing &, a service
// start script) and returns, so kubelet sees the container complete.
// pods may be nil (no cluster).
func RestartLoopCheck(src Snapshotter, pods Pods) check.Definition {
	set := defaultLoopSettings()
	return check.Definition{
		Name:        "cri-restart-loop",
		Area:        Area,
		Description: "no container keeps exiting with code 0 and being restarted (the start-background mistake)",
		Interval:    checkInterval,
		Timeout:     checkTimeout,
		Settings:    set,
		Check:       fromSnapshot(src, func(s *Snapshot) []check.Finding { return restartLoopFindings(s, set, pods) }),
	}
}

func restartLoopFindings(s *Snapshot, set *LoopSettings, pods Pods) []check.Finding {
	var out []check.Finding
	// An exit 0 that kubelet does not restart (restartPolicy OnFailure or
	// Never, an init container) is a task that completed, however many
	// failed attempts came before it.
	zero := func(c *Container, p *corev1.Pod) bool {
		return c.Status.GetExitCode() == 0 && restartsAfterSuccess(p, ContainerName(c))
	}
	for _, g := range looping(s, set, pods, zero) {
		c := g.latest()
		o := ContainerObject(g.sandbox, c)
		out = append(out, check.Finding{
			Severity: check.SeverityProblem, Reason: "StartBackgroundMistake", Object: o, Details: containerDetails(c), Time: unixNano(c.Status.GetFinishedAt()),
			Message: fmt.Sprintf("exits with code 0 (%s) and keeps being restarted (restart %d): the start-background mistake — its command returns instead of staying in the foreground; "+
				"run the main process in the foreground (no trailing &, no daemonising: e.g. nginx -g 'daemon off;', exec in entrypoint scripts), "+
				"or if it is a one-shot task use a Job or restartPolicy OnFailure", orDash(c.Status.GetReason()), c.GetMetadata().GetAttempt()),
		})
	}
	if len(out) == 0 {
		out = append(out, ok("", "NoRestartLoops", "no container keeps exiting with code 0 and being restarted"))
	}
	return out
}
