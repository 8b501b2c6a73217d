package cri

import (
	"fmt"

	"github.com/node-doctor/node-doctor/pkg/check"
)

// RestartLoopCheck finds containers that exit with code 0 and are restarted
// again and again: the "start-background" mistake, where the command starts
// the real process in the background (a daemon, a trailing &, a service
// start script) and returns, so kubelet sees the container complete.
func RestartLoopCheck(src Snapshotter) check.Definition {
	set := defaultLoopSettings()
	return check.Definition{
		Name:        "cri-restart-loop",
		Area:        Area,
		Description: "no container keeps exiting with code 0 and being restarted (the start-background mistake)",
		Interval:    checkInterval,
		Timeout:     checkTimeout,
		Settings:    set,
		Check:       fromSnapshot(src, func(s *Snapshot) []check.Finding { return restartLoopFindings(s, set) }),
	}
}

func restartLoopFindings(s *Snapshot, set *LoopSettings) []check.Finding {
	var out []check.Finding
	for _, g := range looping(s, set, func(c *Container) bool { return c.Status.GetExitCode() == 0 }) {
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
