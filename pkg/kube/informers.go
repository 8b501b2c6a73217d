package kube

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	coordinationlisters "k8s.io/client-go/listers/coordination/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
)

// Informers is the process's one set of shared informers: Services and
// EndpointSlices cluster-wide, this node by field selector, and the pods
// bound to this node (spec.nodeName). It is created
// empty (checks are built before flags are read) and connected once a cluster
// is known; until then every read returns why there is no cluster.
type Informers struct {
	mu       sync.RWMutex
	cs       Interface
	noAccess error
	nodeName string
	// all are every informer, started together.
	all     []cache.SharedIndexInformer
	started bool
	svc     corelisters.ServiceLister
	eps     discoverylisters.EndpointSliceLister
	node    corelisters.NodeLister
	synced  []cache.InformerSynced
	// Pods are optional: without RBAC to list them the other reads work
	// and Pod says why.
	pods       corelisters.PodLister
	podsSynced cache.InformerSynced
	podsErr    error
	// The node's Lease is watched apart too: without RBAC for it the
	// other reads still work.
	lease       coordinationlisters.LeaseLister
	leaseSynced cache.InformerSynced
	leaseErr    error
}

// NodeLeaseNamespace holds the Lease each kubelet renews for its node.
const NodeLeaseNamespace = "kube-node-lease"

// NewInformers returns unconnected informers; reads fail with why until
// Connect.
func NewInformers() *Informers {
	return &Informers{noAccess: ErrNoCluster}
}

// Disconnected records why there is no cluster (e.g. ErrNoCluster).
func (i *Informers) Disconnected(why error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.noAccess = why
}

// Connect builds the informers. resync 0 means no periodic resync.
//
// They are built from the typed clients of the few resources read rather
// than client-go's informer factory, which links informers and listers for
// every API group into the binary.
func (i *Informers) Connect(cs Interface, node string, resync time.Duration) {
	byName := func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", node).String()
	}
	onNode := func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", node).String()
	}
	svc := newInformer[*corev1.ServiceList](cs, cs.Services(metav1.NamespaceAll), &corev1.Service{}, resync, nil)
	eps := newInformer[*discoveryv1.EndpointSliceList](cs, cs.EndpointSlices(metav1.NamespaceAll), &discoveryv1.EndpointSlice{}, resync, nil)
	nodes := newInformer[*corev1.NodeList](cs, cs.Nodes(), &corev1.Node{}, resync, byName)
	pods := newInformer[*corev1.PodList](cs, cs.Pods(metav1.NamespaceAll), &corev1.Pod{}, resync, onNode)
	_ = pods.SetWatchErrorHandlerWithContext(i.podsWatchError)
	leases := newInformer[*coordinationv1.LeaseList](cs, cs.Leases(NodeLeaseNamespace), &coordinationv1.Lease{}, resync, byName)
	_ = leases.SetWatchErrorHandlerWithContext(i.leaseWatchError)
	i.mu.Lock()
	defer i.mu.Unlock()
	i.cs, i.nodeName = cs, node
	i.all, i.started = []cache.SharedIndexInformer{svc, eps, nodes, pods, leases}, false
	i.lease, i.leaseSynced, i.leaseErr = coordinationlisters.NewLeaseLister(leases.GetIndexer()), leases.HasSynced, nil
	i.svc, i.eps = corelisters.NewServiceLister(svc.GetIndexer()), discoverylisters.NewEndpointSliceLister(eps.GetIndexer())
	i.node, i.pods = corelisters.NewNodeLister(nodes.GetIndexer()), corelisters.NewPodLister(pods.GetIndexer())
	i.synced = []cache.InformerSynced{svc.HasSynced, eps.HasSynced, nodes.HasSynced}
	i.podsSynced, i.podsErr = pods.HasSynced, nil
	i.noAccess = nil
}

// listWatcher is a typed client's List and Watch for one resource.
type listWatcher[L runtime.Object] interface {
	List(ctx context.Context, opts metav1.ListOptions) (L, error)
	Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
}

// newInformer is an informer on c's resource with the namespace index the
// listers use, whose cached objects are trimmed by TrimObject.
func newInformer[L runtime.Object](cs Interface, c listWatcher[L], example runtime.Object, resync time.Duration, tweak func(*metav1.ListOptions)) cache.SharedIndexInformer {
	opts := func(o metav1.ListOptions) metav1.ListOptions {
		if tweak != nil {
			tweak(&o)
		}
		return o
	}
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return c.List(ctx, opts(o))
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return c.Watch(ctx, opts(o))
		},
	}
	inf := cache.NewSharedIndexInformerWithOptions(cache.ToListWatcherWithWatchListSemantics(lw, cs), example, cache.SharedIndexInformerOptions{
		ResyncPeriod: resync,
		Indexers:     cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc},
	})
	_ = inf.SetTransform(TrimObject)
	return inf
}

// podsWatchError remembers that pods cannot be listed (RBAC without pods)
// and logs it once, not on every retry.
func (i *Informers) podsWatchError(ctx context.Context, r *cache.Reflector, err error) {
	i.forbiddenOnce(ctx, r, err, &i.podsErr, "list pods on this node")
}

// leaseWatchError does the same for the node's Lease.
func (i *Informers) leaseWatchError(ctx context.Context, r *cache.Reflector, err error) {
	i.forbiddenOnce(ctx, r, err, &i.leaseErr, "list the Lease "+NodeLeaseNamespace+"/"+i.NodeName())
}

func (i *Informers) forbiddenOnce(ctx context.Context, r *cache.Reflector, err error, dst *error, what string) {
	if !apierrors.IsForbidden(err) && !apierrors.IsUnauthorized(err) {
		cache.DefaultWatchErrorHandler(ctx, r, err)
		return
	}
	i.mu.Lock()
	first := *dst == nil
	*dst = fmt.Errorf("kube: %s: %w", what, err)
	i.mu.Unlock()
	if first {
		cache.DefaultWatchErrorHandler(ctx, r, err)
	}
}

// Start starts the informers and waits for their first list, at most
// timeout. It returns at once when not connected.
func (i *Informers) Start(ctx context.Context, timeout time.Duration) error {
	i.mu.Lock()
	all, started, synced := i.all, i.started, i.synced
	i.started = true
	i.mu.Unlock()
	if all == nil {
		return nil
	}
	if !started {
		for _, inf := range all {
			go inf.RunWithContext(ctx)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if !cache.WaitForCacheSync(wctx.Done(), synced...) {
		// Reads keep saying "not listed yet" until the informers catch up.
		return fmt.Errorf("kube: informers: Services, EndpointSlices and Node not listed within %s", timeout)
	}
	// Pods too, unless they cannot be listed at all; not an error either way.
	_ = wait.PollUntilContextCancel(wctx, 50*time.Millisecond, true, func(context.Context) (bool, error) {
		i.mu.RLock()
		defer i.mu.RUnlock()
		return i.podsSynced() || i.podsErr != nil, nil
	})
	return nil
}

func (i *Informers) ready() error {
	i.mu.RLock()
	defer i.mu.RUnlock()
	if i.noAccess != nil {
		return i.noAccess
	}
	for _, s := range i.synced {
		if !s() {
			return errors.New("kube: informers have not listed yet")
		}
	}
	return nil
}

// Services lists every Service.
func (i *Informers) Services() ([]*corev1.Service, error) {
	if err := i.ready(); err != nil {
		return nil, err
	}
	return i.svc.List(labels.Everything())
}

// EndpointSlices lists every EndpointSlice.
func (i *Informers) EndpointSlices() ([]*discoveryv1.EndpointSlice, error) {
	if err := i.ready(); err != nil {
		return nil, err
	}
	return i.eps.List(labels.Everything())
}

// Node returns this node, or nil when it is not in the API.
func (i *Informers) Node() (*corev1.Node, error) {
	if err := i.ready(); err != nil {
		return nil, err
	}
	n, err := i.node.Get(i.nodeName)
	if err != nil {
		return nil, nil //nolint:nilerr // not registered (yet): no node facts
	}
	return n, nil
}

// Pod returns the pod namespace/name bound to this node, nil when the API
// has none, or why it cannot say.
func (i *Informers) Pod(namespace, name string) (*corev1.Pod, error) {
	i.mu.RLock()
	noAccess, lister, synced, podsErr := i.noAccess, i.pods, i.podsSynced, i.podsErr
	i.mu.RUnlock()
	switch {
	case noAccess != nil:
		return nil, noAccess
	case !synced():
		if podsErr != nil {
			return nil, podsErr
		}
		return nil, errors.New("kube: pods have not been listed yet")
	}
	p, err := lister.Pods(namespace).Get(name)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("kube: pod %s/%s: %w", namespace, name, err)
	}
	return p, nil
}

// NodeLease returns this node's Lease in kube-node-lease, or nil when
// there is none.
func (i *Informers) NodeLease() (*coordinationv1.Lease, error) {
	i.mu.RLock()
	noAccess, synced, lister, name, leaseErr := i.noAccess, i.leaseSynced, i.lease, i.nodeName, i.leaseErr
	i.mu.RUnlock()
	if noAccess != nil {
		return nil, noAccess
	}
	if leaseErr != nil && !synced() {
		return nil, leaseErr
	}
	if !synced() {
		return nil, fmt.Errorf("kube: the Lease %s/%s has not been listed yet (node-doctor needs get, list and watch on leases there)", NodeLeaseNamespace, name)
	}
	l, err := lister.Leases(NodeLeaseNamespace).Get(name)
	if err != nil {
		return nil, nil //nolint:nilerr // no Lease: the kubelet never registered one
	}
	return l, nil
}

// GetNodeLease reads this node's Lease from the API server itself, past
// the informer's cache (which may lag when the watch is down); nil when
// there is none.
func (i *Informers) GetNodeLease(ctx context.Context) (*coordinationv1.Lease, error) {
	i.mu.RLock()
	cs, noAccess, name := i.cs, i.noAccess, i.nodeName
	i.mu.RUnlock()
	if noAccess != nil {
		return nil, noAccess
	}
	l, err := cs.Leases(NodeLeaseNamespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("kube: get Lease %s/%s: %w", NodeLeaseNamespace, name, err)
	}
	return l, nil
}

// NodeName is the node the informers watch.
func (i *Informers) NodeName() string {
	i.mu.RLock()
	defer i.mu.RUnlock()
	return i.nodeName
}

// TrimObject shrinks cached objects to what the checks read. managedFields
// become one entry holding only the latest change time and kubectl's
// last-applied annotation goes. Services and EndpointSlices also lose owner
// references, finalizers, labels and annotations not under a kubernetes.io
// domain (kube-proxy reads only those), and endpoints their targetRef,
// hostname and deprecated topology. A Node loses its image list. At 10,000
// Services that is most of the cache. A Pod keeps only what the runtime
// checks read: identity, deletion, phase and restart policies.
func TrimObject(obj any) (any, error) {
	if p, ok := obj.(*corev1.Pod); ok {
		return trimPod(p), nil
	}
	m, ok := obj.(metav1.Object)
	if !ok {
		return obj, nil
	}
	var latest *metav1.Time
	for _, f := range m.GetManagedFields() {
		if f.Time != nil && (latest == nil || f.Time.After(latest.Time)) {
			latest = f.Time
		}
	}
	if mf := m.GetManagedFields(); latest != nil {
		// In place: a new one-entry slice per object is 2 MB at 20,000.
		mf[0] = metav1.ManagedFieldsEntry{Time: latest}
		m.SetManagedFields(mf[:1:1])
	} else {
		m.SetManagedFields(nil)
	}
	if a := m.GetAnnotations(); a[lastApplied] != "" {
		delete(a, lastApplied)
		m.SetAnnotations(a)
	}
	switch o := obj.(type) {
	case *corev1.Service:
		trimMeta(&o.ObjectMeta)
	case *discoveryv1.EndpointSlice:
		trimMeta(&o.ObjectMeta)
		for i := range o.Endpoints {
			e := &o.Endpoints[i]
			e.TargetRef, e.Hostname, e.DeprecatedTopology = nil, nil, nil
		}
	case *corev1.Node:
		o.Status.Images = nil
	}
	return obj, nil
}

// mirrorAnnotation names, on a static pod's mirror, the UID kubelet runs
// the static pod under.
const mirrorAnnotation = "kubernetes.io/config.mirror"

func trimPod(p *corev1.Pod) *corev1.Pod {
	out := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: p.Name, Namespace: p.Namespace, UID: p.UID, ResourceVersion: p.ResourceVersion,
			DeletionTimestamp: p.DeletionTimestamp, DeletionGracePeriodSeconds: p.DeletionGracePeriodSeconds,
		},
		Spec:   corev1.PodSpec{NodeName: p.Spec.NodeName, RestartPolicy: p.Spec.RestartPolicy},
		Status: corev1.PodStatus{Phase: p.Status.Phase},
	}
	if v, ok := p.Annotations[mirrorAnnotation]; ok {
		out.Annotations = map[string]string{mirrorAnnotation: v}
	}
	for _, c := range p.Spec.InitContainers {
		out.Spec.InitContainers = append(out.Spec.InitContainers, corev1.Container{Name: c.Name, RestartPolicy: c.RestartPolicy})
	}
	for _, c := range p.Spec.Containers {
		out.Spec.Containers = append(out.Spec.Containers, corev1.Container{Name: c.Name, RestartPolicy: c.RestartPolicy})
	}
	return out
}

func trimMeta(m *metav1.ObjectMeta) {
	m.OwnerReferences, m.Finalizers, m.GenerateName = nil, nil, ""
	m.Labels = kubernetesKeys(m.Labels)
	m.Annotations = kubernetesKeys(m.Annotations)
}

// kubernetesKeys keeps, in place, the keys whose prefix is kubernetes.io or
// a subdomain of it (service.kubernetes.io/topology-mode, ...).
func kubernetesKeys(m map[string]string) map[string]string {
	for k := range m {
		prefix, _, ok := strings.Cut(k, "/")
		if !ok || (prefix != "kubernetes.io" && !strings.HasSuffix(prefix, ".kubernetes.io")) {
			delete(m, k)
		}
	}
	if len(m) == 0 {
		return nil
	}
	return m
}

const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"
