package cri

import (
	corev1 "k8s.io/api/core/v1"

	"github.com/node-doctor/node-doctor/pkg/check"
)

// Pods reads this node's pods as the API server has them (the shared
// informer's cache). The runtime checks use it to tell a pod that is being
// deleted or has completed from one kubelet failed to run.
type Pods interface {
	// Pod returns the pod namespace/name, nil when the API has no such pod,
	// or an error when the API cannot be asked (no cluster, not listed yet,
	// no access): then the checks judge from the runtime alone.
	Pod(namespace, name string) (*corev1.Pod, error)
}

// podLife is what the API says of the pod a sandbox or container belongs to.
type podLife int

const (
	// podUnknown: no API to ask; judge from the runtime alone.
	podUnknown podLife = iota
	// podActive: the pod exists, is not being deleted and has not finished.
	podActive
	// podGone: deleted, or its name now belongs to a newer pod.
	podGone
	// podTerminating: deletionTimestamp set; kubelet is tearing it down.
	podTerminating
	// podFinished: phase Succeeded or Failed; kubelet stopped it on purpose.
	podFinished
)

// mirrorAnnotation holds, on a static pod's mirror, the UID kubelet runs
// the static pod under (the one in the CRI labels).
const mirrorAnnotation = "kubernetes.io/config.mirror"

// lookupPod asks the API about the pod o names; pods may be nil.
func lookupPod(pods Pods, o check.Object) (podLife, *corev1.Pod) {
	if pods == nil || o.Name == "" {
		return podUnknown, nil
	}
	p, err := pods.Pod(orValue(o.Namespace, "default"), o.Name)
	switch {
	case err != nil:
		return podUnknown, nil
	case p == nil:
		return podGone, nil
	case o.UID != "" && string(p.UID) != o.UID && p.Annotations[mirrorAnnotation] != o.UID:
		// A pod of the same name created after this one was deleted (a
		// StatefulSet replica): this sandbox is the old pod's leftover.
		return podGone, nil
	case p.DeletionTimestamp != nil:
		return podTerminating, p
	case p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed:
		return podFinished, p
	}
	return podActive, p
}

// restartsAfterSuccess says whether kubelet restarts the named container
// when it exits with code 0: its own restartPolicy when it has one (a
// sidecar init container has Always), never for other init containers
// (they run to completion once), else the pod's restartPolicy. Unknown (no
// pod, no such container) counts as yes, as without an API.
func restartsAfterSuccess(p *corev1.Pod, container string) bool {
	if p == nil {
		return true
	}
	for _, c := range p.Spec.InitContainers {
		if c.Name == container {
			return c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
		}
	}
	for _, c := range p.Spec.Containers {
		if c.Name == container && c.RestartPolicy != nil {
			return *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
		}
	}
	return p.Spec.RestartPolicy == "" || p.Spec.RestartPolicy == corev1.RestartPolicyAlways
}
