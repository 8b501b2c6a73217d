package cri

import (
	"fmt"

	"github.com/node-doctor/node-doctor/pkg/check"
)

// SandboxImageCheck reports whether the runtime's sandbox (pause) image is
// present: without it, and without a registry to pull it from, every new
// pod stays in ContainerCreating.
func SandboxImageCheck(src Snapshotter) check.Definition {
	return check.Definition{
		Name:        "cri-sandbox-image",
		Area:        Area,
		Description: "the runtime's sandbox (pause) image is present in its image store",
		Interval:    checkInterval,
		Timeout:     checkTimeout,
		Conditions:  []string{check.ConditionContainerRuntime},
		Check:       fromSnapshot(src, sandboxImageFindings),
	}
}

func sandboxImageFindings(s *Snapshot) []check.Finding {
	const cond = check.ConditionContainerRuntime
	img := s.SandboxImage
	switch {
	case img == "":
		return []check.Finding{ok(cond, "SandboxImageNotReported", "the runtime does not report its sandbox image in its status info")}
	case s.SandboxImagePresent:
		return []check.Finding{ok(cond, "SandboxImagePresent", fmt.Sprintf("sandbox image %s is present", img))}
	}
	f := check.Finding{Severity: check.SeverityProblem, Condition: cond, Reason: "SandboxImageMissing", Details: map[string]string{"image": img}}
	if len(s.Sandboxes) == 0 {
		// Nothing has needed it yet; the first pod will try to pull it.
		f.Severity = check.SeverityWarning
	}
	f.Message = fmt.Sprintf("sandbox (pause) image %s is not in the runtime's image store: every new pod needs it and stays ContainerCreating if it cannot be pulled "+
		"(registry unreachable, air-gapped, auth); pre-load it (ctr -n k8s.io images import / crictl pull %s) or point the runtime's sandbox image at a reachable mirror", img, img)
	return []check.Finding{f}
}
