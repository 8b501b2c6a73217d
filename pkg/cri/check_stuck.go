package cri

import (
	"fmt"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/node-doctor/node-doctor/pkg/check"
)

// StuckSettings tune the stuck-container check.
type StuckSettings struct {
	// After is how long a container may stay CREATED or UNKNOWN.
	After time.Duration `yaml:"after"`
}

// Validate checks the ranges.
func (s *StuckSettings) Validate() error { return positive("after", s.After) }

// StuckCheck finds containers that stay CREATED (never started) or UNKNOWN
// (the runtime lost track of them, e.g. their shim died).
func StuckCheck(src Snapshotter) check.Definition {
	set := &StuckSettings{After: 2 * time.Minute}
	return check.Definition{
		Name:        "cri-stuck-containers",
		Area:        Area,
		Description: "no container stays CREATED or UNKNOWN",
		Interval:    checkInterval,
		Timeout:     checkTimeout,
		Settings:    set,
		Check:       fromSnapshot(src, func(s *Snapshot) []check.Finding { return stuckFindings(s, set) }),
	}
}

func stuckFindings(s *Snapshot, set *StuckSettings) []check.Finding {
	var out []check.Finding
	for _, g := range groupInstances(s) {
		c := g.latest()
		created := unixNano(c.GetCreatedAt())
		since := s.Time.Sub(created)
		if created.IsZero() || since < set.After {
			continue
		}
		o := ContainerObject(g.sandbox, c)
		f := check.Finding{Severity: check.SeverityProblem, Object: o, Details: containerDetails(c), Time: created}
		switch c.GetState() {
		case runtimeapi.ContainerState_CONTAINER_CREATED:
			if g.sandbox != nil && !sandboxReady(g.sandbox) {
				// Its pod stopped (deleted or replaced between create and
				// start): it will never start and goes with the sandbox.
				continue
			}
			f.Reason = "ContainerStuckCreated"
			f.Message = fmt.Sprintf("was created %s ago but never started: the runtime could not start it (runc or shim failure) or kubelet is stuck; "+
				"look for container id %s in the runtime's and kubelet's logs", age(since), shortID(c.GetId()))
		case runtimeapi.ContainerState_CONTAINER_UNKNOWN:
			f.Reason = "ContainerStateUnknown"
			f.Message = fmt.Sprintf("is in state UNKNOWN (created %s ago): the runtime has lost track of it, typically because its shim died; "+
				"check the runtime's log for container id %s; deleting the pod usually clears it", age(since), shortID(c.GetId()))
		default:
			continue
		}
		out = append(out, f)
	}
	if len(out) == 0 {
		out = append(out, ok("", "NoStuckContainers", fmt.Sprintf("no container has been CREATED or UNKNOWN for more than %s", set.After)))
	}
	return out
}
