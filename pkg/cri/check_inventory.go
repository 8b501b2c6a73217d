package cri

import (
	"fmt"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/node-doctor/node-doctor/pkg/check"
)

// InventoryCheck lists every pod sandbox and container the runtime has, the
// way `crictl pods` and `crictl ps -a` do, as healthy findings: the report
// shows them with --verbose and folds them into one line otherwise. The
// other runtime checks say what is wrong.
func InventoryCheck(src Snapshotter) check.Definition {
	return check.Definition{
		Name:        "cri-inventory",
		Area:        Area,
		Description: "pods and containers as the runtime sees them (crictl pods / ps -a), listed with --verbose",
		Interval:    checkInterval,
		Timeout:     checkTimeout,
		Check:       fromSnapshot(src, inventoryFindings),
	}
}

func inventoryFindings(s *Snapshot) []check.Finding {
	out := make([]check.Finding, 0, len(s.Sandboxes)+len(s.Containers))
	for _, sb := range s.Sandboxes {
		state := strings.TrimPrefix(sb.GetState().String(), "SANDBOX_")
		cs := s.ContainersOf(sb.GetId())
		out = append(out, check.Finding{
			Severity: check.SeverityOK, Reason: "PodSandbox", Object: PodObject(sb),
			Message: fmt.Sprintf("sandbox %s %s, attempt %d, %d containers", shortID(sb.GetId()), state, sb.GetMetadata().GetAttempt(), len(cs)),
		})
	}
	for i := range s.Containers {
		c := &s.Containers[i]
		msg := fmt.Sprintf("container %s %s, attempt %d, image %s", shortID(c.GetId()), containerState(c.GetState()), c.GetMetadata().GetAttempt(), c.GetImage().GetImage())
		if st := c.Status; st != nil && c.GetState() == runtimeapi.ContainerState_CONTAINER_EXITED {
			msg += fmt.Sprintf(", exit code %d (%s)", st.GetExitCode(), orDash(st.GetReason()))
		}
		out = append(out, check.Finding{
			Severity: check.SeverityOK, Reason: "Container", Object: ContainerObject(s.Sandbox(c.GetPodSandboxId()), c), Message: msg,
		})
	}
	return out
}
