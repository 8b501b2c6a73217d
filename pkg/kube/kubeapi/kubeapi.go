// Package kubeapi is the part of the Kubernetes API node-doctor uses, and a
// client for it that links only those API groups.
package kubeapi

import (
	"context"
	"fmt"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/flowcontrol"
)

// Interface is the part of the Kubernetes API node-doctor uses, resource by
// resource. Its method sets are those of client-go's typed clients, so a
// clientset adapts in one line each (see kubetest); NewClientset builds it
// on a scheme of only these groups, because client-go's clientset and its
// scheme link every API group into the binary (about 17 MB of 63).
type Interface interface {
	Services(namespace string) Reader[*corev1.Service, *corev1.ServiceList]
	EndpointSlices(namespace string) Reader[*discoveryv1.EndpointSlice, *discoveryv1.EndpointSliceList]
	Pods(namespace string) Reader[*corev1.Pod, *corev1.PodList]
	Leases(namespace string) Reader[*coordinationv1.Lease, *coordinationv1.LeaseList]
	Nodes() NodeClient
	Events(namespace string) EventClient
	TokenReviews() Creator[*authenticationv1.TokenReview]
	SubjectAccessReviews() Creator[*authorizationv1.SubjectAccessReview]
}

// Reader reads one resource.
type Reader[T, L runtime.Object] interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (T, error)
	List(ctx context.Context, opts metav1.ListOptions) (L, error)
	Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
}

// NodeClient reads Nodes and patches their status (the conditions).
type NodeClient interface {
	Reader[*corev1.Node, *corev1.NodeList]
	PatchStatus(ctx context.Context, nodeName string, data []byte) (*corev1.Node, error)
}

// EventClient writes core/v1 Events.
type EventClient interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*corev1.Event, error)
	Create(ctx context.Context, ev *corev1.Event, opts metav1.CreateOptions) (*corev1.Event, error)
	Patch(ctx context.Context, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions, subresources ...string) (*corev1.Event, error)
}

// Creator creates one kind of review.
type Creator[T runtime.Object] interface {
	Create(ctx context.Context, obj T, opts metav1.CreateOptions) (T, error)
}

// scheme holds only the groups of Interface.
var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, discoveryv1.AddToScheme, coordinationv1.AddToScheme,
		authenticationv1.AddToScheme, authorizationv1.AddToScheme,
	} {
		if err := add(s); err != nil {
			panic(err) // static registrations; cannot fail
		}
	}
	metav1.AddToGroupVersion(s, schema.GroupVersion{Version: "v1"})
	return s
}()

var (
	codecs         = serializer.NewCodecFactory(scheme)
	parameterCodec = runtime.NewParameterCodec(scheme)
)

// Clientset is Interface over one HTTP client.
type Clientset struct {
	core, discovery, coordination, authn, authz rest.Interface
}

// NewClientset builds Interface from rc, with one HTTP client and one rate
// limiter for every group, as client-go's clientset does.
func NewClientset(rc *rest.Config) (*Clientset, error) {
	c := *rc
	if c.UserAgent == "" {
		c.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	if c.RateLimiter == nil && c.QPS > 0 {
		if c.Burst <= 0 {
			return nil, fmt.Errorf("kube: client: burst must be above 0 when QPS is set")
		}
		c.RateLimiter = flowcontrol.NewTokenBucketRateLimiter(c.QPS, c.Burst)
	}
	hc, err := rest.HTTPClientFor(&c)
	if err != nil {
		return nil, fmt.Errorf("kube: client: %w", err)
	}
	group := func(gv schema.GroupVersion) (rest.Interface, error) {
		g := c
		g.GroupVersion = &gv
		g.APIPath = "/apis"
		if gv.Group == "" {
			g.APIPath = "/api"
		}
		g.NegotiatedSerializer = codecs.WithoutConversion()
		rc, err := rest.RESTClientForConfigAndClient(&g, hc)
		if err != nil {
			return nil, fmt.Errorf("kube: client for %s: %w", gv, err)
		}
		return rc, nil
	}
	var cs Clientset
	for _, g := range []struct {
		dst *rest.Interface
		gv  schema.GroupVersion
	}{
		{&cs.core, corev1.SchemeGroupVersion},
		{&cs.discovery, discoveryv1.SchemeGroupVersion},
		{&cs.coordination, coordinationv1.SchemeGroupVersion},
		{&cs.authn, authenticationv1.SchemeGroupVersion},
		{&cs.authz, authorizationv1.SchemeGroupVersion},
	} {
		if *g.dst, err = group(g.gv); err != nil {
			return nil, err
		}
	}
	return &cs, nil
}

// typed is a resource's client over a REST client: the few verbs
// node-doctor uses, written out rather than taken from client-go's gentype,
// which links client-go's fake object tracker and, through it, the OpenAPI
// models into the binary.
type typed[T, L runtime.Object] struct {
	rc        rest.Interface
	resource  string
	namespace string
	newObj    func() T
	newList   func() L
}

func newTyped[T, L any, PT interface {
	*T
	runtime.Object
}, PL interface {
	*L
	runtime.Object
}](resource string, rc rest.Interface, namespace string) typed[PT, PL] {
	return typed[PT, PL]{rc: rc, resource: resource, namespace: namespace,
		newObj: func() PT { return PT(new(T)) }, newList: func() PL { return PL(new(L)) }}
}

func (c typed[T, L]) req(r *rest.Request) *rest.Request {
	return r.NamespaceIfScoped(c.namespace, c.namespace != "").Resource(c.resource)
}

func timeout(s *int64) time.Duration {
	if s == nil {
		return 0
	}
	return time.Duration(*s) * time.Second
}

func (c typed[T, L]) Get(ctx context.Context, name string, opts metav1.GetOptions) (T, error) {
	out := c.newObj()
	err := c.req(c.rc.Get()).Name(name).VersionedParams(&opts, parameterCodec).Do(ctx).Into(out)
	return out, err
}

func (c typed[T, L]) List(ctx context.Context, opts metav1.ListOptions) (L, error) {
	out := c.newList()
	err := c.req(c.rc.Get()).VersionedParams(&opts, parameterCodec).Timeout(timeout(opts.TimeoutSeconds)).Do(ctx).Into(out)
	return out, err
}

func (c typed[T, L]) Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	opts.Watch = true
	return c.req(c.rc.Get()).VersionedParams(&opts, parameterCodec).Timeout(timeout(opts.TimeoutSeconds)).Watch(ctx)
}

func (c typed[T, L]) Create(ctx context.Context, obj T, opts metav1.CreateOptions) (T, error) {
	out := c.newObj()
	err := c.req(c.rc.Post()).VersionedParams(&opts, parameterCodec).Body(obj).Do(ctx).Into(out)
	return out, err
}

func (c typed[T, L]) Patch(ctx context.Context, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions, subresources ...string) (T, error) {
	out := c.newObj()
	err := c.req(c.rc.Patch(pt)).Name(name).SubResource(subresources...).VersionedParams(&opts, parameterCodec).Body(data).Do(ctx).Into(out)
	return out, err
}

// Services reads Services.
func (c *Clientset) Services(ns string) Reader[*corev1.Service, *corev1.ServiceList] {
	return newTyped[corev1.Service, corev1.ServiceList]("services", c.core, ns)
}

// EndpointSlices reads EndpointSlices.
func (c *Clientset) EndpointSlices(ns string) Reader[*discoveryv1.EndpointSlice, *discoveryv1.EndpointSliceList] {
	return newTyped[discoveryv1.EndpointSlice, discoveryv1.EndpointSliceList]("endpointslices", c.discovery, ns)
}

// Pods reads Pods.
func (c *Clientset) Pods(ns string) Reader[*corev1.Pod, *corev1.PodList] {
	return newTyped[corev1.Pod, corev1.PodList]("pods", c.core, ns)
}

// Leases reads Leases.
func (c *Clientset) Leases(ns string) Reader[*coordinationv1.Lease, *coordinationv1.LeaseList] {
	return newTyped[coordinationv1.Lease, coordinationv1.LeaseList]("leases", c.coordination, ns)
}

// Nodes reads Nodes and patches their status.
func (c *Clientset) Nodes() NodeClient {
	return nodeClient{newTyped[corev1.Node, corev1.NodeList]("nodes", c.core, "")}
}

// Events writes Events.
func (c *Clientset) Events(ns string) EventClient {
	return newTyped[corev1.Event, corev1.EventList]("events", c.core, ns)
}

// TokenReviews creates TokenReviews.
func (c *Clientset) TokenReviews() Creator[*authenticationv1.TokenReview] {
	return newTyped[authenticationv1.TokenReview, authenticationv1.TokenReview]("tokenreviews", c.authn, "")
}

// SubjectAccessReviews creates SubjectAccessReviews.
func (c *Clientset) SubjectAccessReviews() Creator[*authorizationv1.SubjectAccessReview] {
	return newTyped[authorizationv1.SubjectAccessReview, authorizationv1.SubjectAccessReview]("subjectaccessreviews", c.authz, "")
}

type nodeClient struct {
	typed[*corev1.Node, *corev1.NodeList]
}

// PatchStatus strategic-merge-patches the node's status, as client-go's
// typed client does.
func (n nodeClient) PatchStatus(ctx context.Context, nodeName string, data []byte) (*corev1.Node, error) {
	return n.Patch(ctx, nodeName, types.StrategicMergePatchType, data, metav1.PatchOptions{}, "status")
}
