package cri

import (
	"fmt"
	"io/fs"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/node-doctor/node-doctor/pkg/check"
)

// CrashLoopCheck finds containers that keep exiting with a non-zero code and
// being restarted (CrashLoopBackOff), with the exit code, reason and the end
// of the log the last instance wrote. pods may be nil (no cluster).
func CrashLoopCheck(src Snapshotter, hostFS fs.FS, pods Pods) check.Definition {
	set := defaultLoopSettings()
	return check.Definition{
		Name:        "cri-crash-loop",
		Area:        Area,
		Description: "no container keeps exiting with a non-zero code and being restarted (CrashLoopBackOff)",
		Interval:    checkInterval,
		Timeout:     checkTimeout,
		Settings:    set,
		Check:       fromSnapshot(src, func(s *Snapshot) []check.Finding { return crashLoopFindings(s, set, hostFS, pods) }),
	}
}

func crashLoopFindings(s *Snapshot, set *LoopSettings, hostFS fs.FS, pods Pods) []check.Finding {
	groups := looping(s, set, pods, func(c *Container, _ *corev1.Pod) bool {
		// OOM kills have their own check and fix.
		return c.Status.GetExitCode() != 0 && c.Status.GetReason() != "OOMKilled"
	})
	var out []check.Finding
	for _, g := range groups {
		c := g.latest()
		st := c.Status
		o := ContainerObject(g.sandbox, c)
		f := check.Finding{Severity: check.SeverityProblem, Reason: "CrashLoop", Object: o, Details: containerDetails(c), Time: unixNano(st.GetFinishedAt())}
		var excerpt []string
		if st.GetMessage() != "" {
			excerpt = append(excerpt, fmt.Sprintf("termination message: %q", lastLine(st.GetMessage())))
		}
		if tail, err := TailLog(hostFS, st.GetLogPath(), LogTailLines, LogTailBytes); err == nil && tail != "" {
			f.Details["log_tail"] = tail
			excerpt = append(excerpt, fmt.Sprintf("last log line: %q", lastLine(tail)))
		} else if err != nil {
			f.Details["log_error"] = err.Error()
		}
		f.LogExcerpt = strings.Join(excerpt, "; ")
		f.Message = fmt.Sprintf("exits with code %d (%s) and keeps being restarted (restart %d); see kubectl logs %s --previous and fix the command, config or dependency it fails on",
			st.GetExitCode(), orDash(st.GetReason()), c.GetMetadata().GetAttempt(), kubectlRef(o))
		out = append(out, f)
	}
	if len(out) == 0 {
		out = append(out, ok("", "NoCrashLoops", fmt.Sprintf("no container is crash looping (%d containers in %d ready pods)", len(s.Containers), readySandboxes(s))))
	}
	return out
}
