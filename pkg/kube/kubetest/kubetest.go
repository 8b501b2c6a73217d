// Package kubetest adapts a client-go clientset (a fake one in unit tests,
// the harness's in e2e tests) to kubeapi.Interface.
package kubetest

import (
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/node-doctor/node-doctor/pkg/kube/kubeapi"
)

// Adapt is cs as kubeapi.Interface.
func Adapt(cs kubernetes.Interface) kubeapi.Interface { return clientset{cs} }

type clientset struct{ cs kubernetes.Interface }

func (c clientset) Services(ns string) kubeapi.Reader[*corev1.Service, *corev1.ServiceList] {
	return c.cs.CoreV1().Services(ns)
}

func (c clientset) EndpointSlices(ns string) kubeapi.Reader[*discoveryv1.EndpointSlice, *discoveryv1.EndpointSliceList] {
	return c.cs.DiscoveryV1().EndpointSlices(ns)
}

func (c clientset) Pods(ns string) kubeapi.Reader[*corev1.Pod, *corev1.PodList] {
	return c.cs.CoreV1().Pods(ns)
}

func (c clientset) Leases(ns string) kubeapi.Reader[*coordinationv1.Lease, *coordinationv1.LeaseList] {
	return c.cs.CoordinationV1().Leases(ns)
}

func (c clientset) Nodes() kubeapi.NodeClient { return c.cs.CoreV1().Nodes() }

func (c clientset) Events(ns string) kubeapi.EventClient { return c.cs.CoreV1().Events(ns) }

func (c clientset) TokenReviews() kubeapi.Creator[*authenticationv1.TokenReview] {
	return c.cs.AuthenticationV1().TokenReviews()
}

func (c clientset) SubjectAccessReviews() kubeapi.Creator[*authorizationv1.SubjectAccessReview] {
	return c.cs.AuthorizationV1().SubjectAccessReviews()
}

// IsWatchListSemanticsUnSupported passes on what a fake clientset says, so
// informers on it list and watch instead of using watch-list.
func (c clientset) IsWatchListSemanticsUnSupported() bool {
	u, ok := c.cs.(interface{ IsWatchListSemanticsUnSupported() bool })
	return ok && u.IsWatchListSemanticsUnSupported()
}
