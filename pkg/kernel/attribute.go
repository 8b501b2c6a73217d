package kernel

import (
	"context"

	"github.com/node-doctor/node-doctor/pkg/check"
)

// Attributor names the pod and container behind a pod UID and container ID
// taken from a cgroup path (the container runtime knows them).
type Attributor interface {
	Attribute(ctx context.Context, podUID, containerID string) (check.Object, bool)
}

// attribute points node-level findings that carry a cgroup's pod UID or
// container ID at that pod, so their Events land on the Pod.
func attribute(ctx context.Context, a Attributor, fs []check.Finding) {
	if a == nil {
		return
	}
	for i := range fs {
		f := &fs[i]
		uid, cid := f.Details["pod_uid"], f.Details["container_id"]
		if !f.Object.IsNode() || (uid == "" && cid == "") {
			continue
		}
		if o, ok := a.Attribute(ctx, uid, cid); ok {
			f.Object = o
		}
	}
}
