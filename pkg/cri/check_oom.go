package cri

import (
	"fmt"
	"time"

	"github.com/node-doctor/node-doctor/pkg/check"
)

// OOMSettings tune the OOM check.
type OOMSettings struct {
	// Window is how long after an OOM kill it is still reported.
	Window time.Duration `yaml:"window"`
}

// Validate checks the ranges.
func (s *OOMSettings) Validate() error { return positive("window", s.Window) }

// OOMKilledCheck finds containers the kernel OOM killer ended because they
// hit their memory limit.
func OOMKilledCheck(src Snapshotter) check.Definition {
	set := &OOMSettings{Window: time.Hour}
	return check.Definition{
		Name:        "cri-oom-killed",
		Area:        Area,
		Description: "no container was OOM-killed recently (reason OOMKilled)",
		Interval:    checkInterval,
		Timeout:     checkTimeout,
		Settings:    set,
		Check:       fromSnapshot(src, func(s *Snapshot) []check.Finding { return oomFindings(s, set) }),
	}
}

func oomFindings(s *Snapshot, set *OOMSettings) []check.Finding {
	var out []check.Finding
	for _, g := range groupInstances(s) {
		c := g.lastExited()
		if c == nil || c.Status.GetReason() != "OOMKilled" {
			continue
		}
		fin := unixNano(c.Status.GetFinishedAt())
		if !fin.IsZero() && s.Time.Sub(fin) > set.Window {
			continue
		}
		o := ContainerObject(g.sandbox, c)
		d := containerDetails(c)
		limit := ""
		if l := c.Status.GetResources().GetLinux().GetMemoryLimitInBytes(); l > 0 {
			d["memory_limit_bytes"] = fmt.Sprint(l)
			limit = fmt.Sprintf(" of %d MiB", l>>20)
		}
		when := "at an unknown time"
		if !fin.IsZero() {
			when = age(s.Time.Sub(fin)) + " ago"
		}
		out = append(out, check.Finding{
			Severity: check.SeverityProblem, Reason: "OOMKilled", Object: o, Details: d, Time: fin,
			Message: fmt.Sprintf("was killed by the kernel OOM killer %s (exit code %d, restart %d) for using its whole memory limit%s; "+
				"raise resources.limits.memory, or find what grows (a leak, an unbounded cache, a JVM/Node heap set above the limit)",
				when, c.Status.GetExitCode(), c.GetMetadata().GetAttempt(), limit),
		})
	}
	if len(out) == 0 {
		out = append(out, ok("", "NoOOMKills", fmt.Sprintf("no container was OOM-killed in the last %s", set.Window)))
	}
	return out
}
