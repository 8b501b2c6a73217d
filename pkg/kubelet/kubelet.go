// Package kubelet checks the node's kubelet as NPD's health-checker does and
// more: the process, its /healthz, the node Lease it renews and the PLEG
// health it reports in the Node's Ready condition.
package kubelet

import (
	"context"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
)

// Process is one kubelet process on the node.
type Process struct {
	PID int
	// Args is its command line, Args[0] the program.
	Args []string
	// State is the one-letter state of proc/<pid>/stat: 'T' is stopped.
	State byte
	// Started is when the process started.
	Started time.Time
}

// Stopped reports whether the process is stopped by a signal (SIGSTOP).
func (p Process) Stopped() bool { return p.State == 'T' }

// Processes finds the kubelet processes on the node.
type Processes interface {
	Kubelets(ctx context.Context) ([]Process, error)
}

// Healthz asks a kubelet's healthz endpoint how it is.
type Healthz interface {
	// Get returns the HTTP status and the start of the body; err when no
	// answer came.
	Get(ctx context.Context, url string) (status int, body string, err error)
}

// API is what the check reads of this node from the API server: its Lease
// and its Node from the informers' cache, and the Lease asked afresh before
// calling it stale (nil, nil when there is none; an error when there is no
// cluster or it is not listed yet).
type API interface {
	NodeLease() (*coordinationv1.Lease, error)
	GetNodeLease(ctx context.Context) (*coordinationv1.Lease, error)
	Node() (*corev1.Node, error)
}
