package kube

import (
	"context"
	"errors"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/node-doctor/node-doctor/pkg/kube/kubetest"
)

func TestTrimObject(t *testing.T) {
	t1 := metav1.NewTime(time.Unix(100, 0))
	t2 := metav1.NewTime(time.Unix(200, 0))
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{
		Annotations:   map[string]string{lastApplied: "{...}", "keep": "me"},
		ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "a", Time: &t2, FieldsV1: metav1.NewFieldsV1(`{"f:spec":{}}`)}, {Manager: "b", Time: &t1}},
	}}
	out, err := TrimObject(svc)
	if err != nil {
		t.Fatal(err)
	}
	s := out.(*corev1.Service)
	if len(s.ManagedFields) != 1 || !s.ManagedFields[0].Time.Equal(&t2) || s.ManagedFields[0].FieldsV1 != nil {
		t.Errorf("managedFields %+v", s.ManagedFields)
	}
	if _, ok := s.Annotations[lastApplied]; ok || s.Annotations["keep"] != "" {
		t.Errorf("annotations %v", s.Annotations)
	}
}

func TestTrimObjectKeepsWhatKubeProxyReads(t *testing.T) {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{
		Labels:      map[string]string{"app": "web", "service.kubernetes.io/service-proxy-name": "other", "service.kubernetes.io/headless": ""},
		Annotations: map[string]string{"helm.sh/chart": "x", "service.kubernetes.io/topology-mode": "Auto"},
		Finalizers:  []string{"service.kubernetes.io/load-balancer-cleanup"},
	}}
	if _, err := TrimObject(svc); err != nil {
		t.Fatal(err)
	}
	if len(svc.Labels) != 2 || svc.Labels["service.kubernetes.io/service-proxy-name"] != "other" {
		t.Errorf("labels %v", svc.Labels)
	}
	if _, ok := svc.Labels["service.kubernetes.io/headless"]; !ok {
		t.Errorf("headless label dropped: %v", svc.Labels)
	}
	if len(svc.Annotations) != 1 || svc.Annotations["service.kubernetes.io/topology-mode"] != "Auto" || svc.Finalizers != nil {
		t.Errorf("annotations %v finalizers %v", svc.Annotations, svc.Finalizers)
	}
	ready, node := true, "n1"
	sl := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{
		GenerateName:    "web-",
		Labels:          map[string]string{discoveryv1.LabelServiceName: "web", "app": "web"},
		OwnerReferences: []metav1.OwnerReference{{Kind: "Service", Name: "web"}},
	}, Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.1"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}, NodeName: &node,
		Hostname: &node, TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "web-1"}}}}
	if _, err := TrimObject(sl); err != nil {
		t.Fatal(err)
	}
	e := sl.Endpoints[0]
	if sl.Labels[discoveryv1.LabelServiceName] != "web" || len(sl.Labels) != 1 || sl.OwnerReferences != nil || sl.GenerateName != "" {
		t.Errorf("slice meta %+v", sl.ObjectMeta)
	}
	if e.TargetRef != nil || e.Hostname != nil || *e.NodeName != "n1" || !*e.Conditions.Ready || e.Addresses[0] != "10.0.0.1" {
		t.Errorf("endpoint %+v", e)
	}
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"topology.kubernetes.io/zone": "a", "team": "x"}},
		Status: corev1.NodeStatus{Images: []corev1.ContainerImage{{Names: []string{"busybox"}}}}}
	if _, err := TrimObject(n); err != nil {
		t.Fatal(err)
	}
	if n.Status.Images != nil || len(n.Labels) != 2 {
		t.Errorf("node %+v", n)
	}
}

func TestNodeLease(t *testing.T) {
	i := NewInformers()
	if _, err := i.NodeLease(); !errors.Is(err, ErrNoCluster) {
		t.Fatalf("unconnected: %v, want ErrNoCluster", err)
	}
	renew := metav1.NewMicroTime(time.Now().Add(-time.Minute).Truncate(time.Second))
	cs := fake.NewClientset(
		&coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: NodeLeaseNamespace, Name: "n1"}, Spec: coordinationv1.LeaseSpec{RenewTime: &renew}},
		&coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: NodeLeaseNamespace, Name: "n2"}},
		&coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "n1"}},
	)
	i.Connect(kubetest.Adapt(cs), "n1", 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := i.Start(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		_, err := i.NodeLease()
		return err == nil, nil
	}); err != nil {
		t.Fatal("lease never listed")
	}
	l, err := i.NodeLease()
	if err != nil || l == nil || l.Namespace != NodeLeaseNamespace || l.Name != "n1" || !l.Spec.RenewTime.Equal(&renew) {
		t.Fatalf("NodeLease = %+v, %v", l, err)
	}
	if l, err := i.GetNodeLease(ctx); err != nil || l == nil || l.Name != "n1" {
		t.Fatalf("GetNodeLease = %+v, %v", l, err)
	}
	i2 := NewInformers()
	i2.Connect(kubetest.Adapt(fake.NewClientset()), "n3", 0)
	if err := i2.Start(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	_ = wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 5*time.Second, true, func(context.Context) (bool, error) {
		_, err := i2.NodeLease()
		return err == nil, nil
	})
	if l, err := i2.NodeLease(); l != nil || err != nil {
		t.Fatalf("no lease: %+v, %v; want nil, nil", l, err)
	}
	if l, err := i2.GetNodeLease(ctx); l != nil || err != nil {
		t.Fatalf("GetNodeLease with no lease: %+v, %v; want nil, nil", l, err)
	}
}

func TestInformersPod(t *testing.T) {
	del := metav1.NewTime(time.Unix(300, 0))
	always := corev1.ContainerRestartPolicyAlways
	web := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", UID: "uid-web", DeletionTimestamp: &del,
			Labels: map[string]string{"app": "web"}, Annotations: map[string]string{"kubernetes.io/config.mirror": "hash", "note": "x"}},
		Spec: corev1.PodSpec{NodeName: node, RestartPolicy: corev1.RestartPolicyOnFailure,
			InitContainers: []corev1.Container{{Name: "proxy", Image: "envoy", RestartPolicy: &always}},
			Containers:     []corev1.Container{{Name: "app", Image: "web:1", Command: []string{"serve"}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.5"},
	}
	cs := fake.NewClientset(web)
	inf := NewInformers()
	if _, err := inf.Pod("shop", "web"); !errors.Is(err, ErrNoCluster) {
		t.Errorf("unconnected: %v", err)
	}
	inf.Connect(kubetest.Adapt(cs), node, 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := inf.Start(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	p, err := inf.Pod("shop", "web")
	if err != nil || p == nil {
		t.Fatalf("pod: %v %v", p, err)
	}
	if p.UID != "uid-web" || p.DeletionTimestamp == nil || p.Spec.RestartPolicy != corev1.RestartPolicyOnFailure || p.Status.Phase != corev1.PodRunning ||
		len(p.Spec.InitContainers) != 1 || *p.Spec.InitContainers[0].RestartPolicy != always || p.Spec.Containers[0].Name != "app" {
		t.Errorf("pod lost what the runtime checks read: %+v", p)
	}
	if p.Labels != nil || len(p.Annotations) != 1 || p.Spec.Containers[0].Image != "" || p.Status.PodIP != "" {
		t.Errorf("pod not trimmed: %+v", p)
	}
	if p, err := inf.Pod("shop", "gone"); p != nil || err != nil {
		t.Errorf("missing pod: %v %v", p, err)
	}
}

// Without RBAC for pods the other informers work, Start does not wait its
// whole timeout for pods, and Pod says why.
func TestInformersPodsForbidden(t *testing.T) {
	cs := fake.NewClientset()
	cs.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(corev1.Resource("pods"), "", errors.New("RBAC: no list pods"))
	})
	inf := NewInformers()
	inf.Connect(kubetest.Adapt(cs), node, 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	if err := inf.Start(ctx, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Start waited %s for pods it may not list", d)
	}
	if _, err := inf.Services(); err != nil {
		t.Errorf("services: %v", err)
	}
	if p, err := inf.Pod("shop", "web"); p != nil || !apierrors.IsForbidden(err) {
		t.Errorf("pod without RBAC: %v %v", p, err)
	}
}
