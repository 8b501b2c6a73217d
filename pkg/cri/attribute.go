package cri

import (
	"context"
	"strings"

	"github.com/node-doctor/node-doctor/pkg/check"
)

// Attribute names the pod, and the container when its ID is known, that a
// cgroup seen in the kernel log belongs to (an OOM kill's task_memcg).
// It answers from the shared snapshot and reports false when the runtime
// cannot be asked or no longer knows them.
func (s *Source) Attribute(ctx context.Context, podUID, containerID string) (check.Object, bool) {
	snap, err := s.Snapshot(ctx)
	if err != nil || snap == nil {
		return check.Object{}, false
	}
	if containerID != "" {
		for i := range snap.Containers {
			c := &snap.Containers[i]
			// Cgroup paths may hold a short ID; a very short one is ambiguous.
			if id := c.GetId(); id == containerID || (len(containerID) >= 12 && strings.HasPrefix(id, containerID)) {
				return ContainerObject(snap.Sandbox(c.GetPodSandboxId()), c), true
			}
		}
	}
	if podUID != "" {
		for _, sb := range snap.Sandboxes {
			if o := PodObject(sb); o.UID == podUID {
				return o, true
			}
		}
	}
	return check.Object{}, false
}
