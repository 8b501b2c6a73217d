package harness

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
)

// Scenario helpers. There is no scheduler: every pod the helpers create is
// bound to the node with spec.nodeName.

// ManagedLabel marks objects the harness created.
const ManagedLabel = "node-doctor.io/e2e"

// CreateNamespace creates a namespace named <prefix>-<random>.
func (c *Cluster) CreateNamespace(ctx context.Context, prefix string) (string, error) {
	ns, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		GenerateName: prefix + "-", Labels: map[string]string{ManagedLabel: "true"},
	}}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("create namespace %s-*: %w", prefix, err)
	}
	// Pods cannot be admitted until the namespace's default ServiceAccount exists.
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := c.Client.CoreV1().ServiceAccounts(ns.Name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		return "", fmt.Errorf("namespace %s: default service account: %w", ns.Name, err)
	}
	return ns.Name, nil
}

// PodOptions describe a single-container pod on the node.
type PodOptions struct {
	Namespace string
	Name      string
	Image     string   // default BusyboxImage
	Command   []string // default: sleep forever
	Labels    map[string]string
	// Port, when set, is exposed as "http" and probed with a TCP readiness probe.
	Port          int32
	RestartPolicy corev1.RestartPolicy // default Always
	// PullPolicy defaults to IfNotPresent: local images are used, and a
	// missing one (nginx:not-exist) really fails to pull.
	PullPolicy corev1.PullPolicy
}

// PodSpec builds the pod PodOptions describe, bound to the node.
func (c *Cluster) PodSpec(o PodOptions) *corev1.Pod {
	if o.Image == "" {
		o.Image = BusyboxImage
	}
	if o.Command == nil {
		o.Command = []string{"/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"}
	}
	if o.RestartPolicy == "" {
		o.RestartPolicy = corev1.RestartPolicyAlways
	}
	if o.PullPolicy == "" {
		o.PullPolicy = corev1.PullIfNotPresent
	}
	labels := map[string]string{ManagedLabel: "true"}
	for k, v := range o.Labels {
		labels[k] = v
	}
	grace := int64(1)
	ctr := corev1.Container{Name: "main", Image: o.Image, Command: o.Command, ImagePullPolicy: o.PullPolicy}
	if o.Port != 0 {
		ctr.Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: o.Port, Protocol: corev1.ProtocolTCP}}
		ctr.ReadinessProbe = &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(o.Port)}},
			PeriodSeconds: 1,
		}
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: o.Name, Namespace: o.Namespace, Labels: labels},
		Spec: corev1.PodSpec{
			NodeName:                      c.NodeName,
			RestartPolicy:                 o.RestartPolicy,
			TerminationGracePeriodSeconds: &grace,
			Containers:                    []corev1.Container{ctr},
		},
	}
}

// CreatePod creates the pod PodOptions describe.
func (c *Cluster) CreatePod(ctx context.Context, o PodOptions) (*corev1.Pod, error) {
	p, err := c.Client.CoreV1().Pods(o.Namespace).Create(ctx, c.PodSpec(o), metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create pod %s/%s: %w", o.Namespace, o.Name, err)
	}
	return p, nil
}

// CreateDeployment creates a Deployment of replicas pods built from o
// (o.Name names the Deployment; RestartPolicy must be Always).
func (c *Cluster) CreateDeployment(ctx context.Context, o PodOptions, replicas int32) (*appsv1.Deployment, error) {
	pod := c.PodSpec(o)
	sel := map[string]string{"app": o.Name}
	for k, v := range sel {
		pod.Labels[k] = v
	}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: o.Name, Namespace: o.Namespace, Labels: map[string]string{ManagedLabel: "true"}},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: sel},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: pod.Labels}, Spec: pod.Spec},
		},
	}
	d, err := c.Client.AppsV1().Deployments(o.Namespace).Create(ctx, d, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create deployment %s/%s: %w", o.Namespace, o.Name, err)
	}
	return d, nil
}

// ServiceWithEndpoints is a ClusterIP Service backed by n HTTP pods.
type ServiceWithEndpoints struct {
	Service *corev1.Service
	Pods    []*corev1.Pod
}

// CreateServiceWithEndpoints creates n busybox httpd pods answering
// "<pod name>" on port 8080, and a ClusterIP Service named name on port 80
// selecting them, then waits until all n endpoints are ready.
func (c *Cluster) CreateServiceWithEndpoints(ctx context.Context, ns, name string, n int) (*ServiceWithEndpoints, error) {
	out := &ServiceWithEndpoints{}
	for i := 0; i < n; i++ {
		pod := fmt.Sprintf("%s-%d", name, i)
		p, err := c.CreatePod(ctx, PodOptions{
			Namespace: ns, Name: pod, Labels: map[string]string{"app": name}, Port: 8080,
			Command: []string{"/bin/sh", "-c", "mkdir -p /www && echo " + pod + " > /www/index.html && exec httpd -f -p 8080 -h /www"},
		})
		if err != nil {
			return nil, err
		}
		out.Pods = append(out.Pods, p)
	}
	svc, err := c.CreateService(ctx, ns, name, map[string]string{"app": name}, 80, 8080)
	if err != nil {
		return nil, err
	}
	out.Service = svc
	if err := c.WaitForEndpoints(ctx, ns, name, n); err != nil {
		return nil, err
	}
	for i, p := range out.Pods {
		if out.Pods[i], err = c.Client.CoreV1().Pods(ns).Get(ctx, p.Name, metav1.GetOptions{}); err != nil {
			return nil, fmt.Errorf("get pod %s/%s: %w", ns, p.Name, err)
		}
	}
	return out, nil
}

// CreateService creates a ClusterIP Service with one TCP port named "http".
func (c *Cluster) CreateService(ctx context.Context, ns, name string, selector map[string]string, port, targetPort int32) (*corev1.Service, error) {
	svc, err := c.Client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{ManagedLabel: "true"}},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeClusterIP,
			Selector: selector,
			Ports: []corev1.ServicePort{{Name: "http", Port: port, TargetPort: intstr.FromInt32(targetPort),
				Protocol: corev1.ProtocolTCP}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create service %s/%s: %w", ns, name, err)
	}
	return svc, nil
}

// WaitForEndpoints waits until the Service's EndpointSlices list n ready endpoints.
func (c *Cluster) WaitForEndpoints(ctx context.Context, ns, svc string, n int) error {
	var last int
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		slices, err := c.Client.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{
			LabelSelector: discoveryv1.LabelServiceName + "=" + svc,
		})
		if err != nil {
			return false, nil
		}
		last = 0
		for _, s := range slices.Items {
			for _, ep := range s.Endpoints {
				if ep.Conditions.Ready != nil && *ep.Conditions.Ready {
					last++
				}
			}
		}
		return last >= n, nil
	})
	if err != nil {
		return fmt.Errorf("service %s/%s: %d of %d endpoints ready: %w", ns, svc, last, n, err)
	}
	return nil
}

// PodCondition is a predicate WaitForPod waits on. Returning an error stops
// the wait (e.g. the pod reached a state it can never leave).
type PodCondition func(*corev1.Pod) (bool, error)

// WaitForPod waits until cond holds for the pod, and returns the pod. On
// timeout the error carries the pod's phase and container states.
func (c *Cluster) WaitForPod(ctx context.Context, ns, name string, timeout time.Duration, cond PodCondition) (*corev1.Pod, error) {
	var pod *corev1.Pod
	var condErr error
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		p, err := c.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			if apierrors.IsNotFound(err) {
				return false, nil
			}
			return false, nil
		}
		pod = p
		ok, err := cond(p)
		if err != nil {
			condErr = err
			return false, err
		}
		return ok, nil
	})
	if condErr != nil {
		return pod, fmt.Errorf("pod %s/%s: %w (%s)", ns, name, condErr, DescribePod(pod))
	}
	if err != nil {
		return pod, fmt.Errorf("pod %s/%s: wait: %w (%s)", ns, name, err, DescribePod(pod))
	}
	return pod, nil
}

// PodRunningReady holds when the pod runs with all containers ready.
func PodRunningReady(p *corev1.Pod) (bool, error) {
	if p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded {
		return false, fmt.Errorf("pod ended in phase %s", p.Status.Phase)
	}
	if p.Status.Phase != corev1.PodRunning {
		return false, nil
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue, nil
		}
	}
	return false, nil
}

// PodPhase holds when the pod reached phase.
func PodPhase(phase corev1.PodPhase) PodCondition {
	return func(p *corev1.Pod) (bool, error) {
		if p.Status.Phase == phase {
			return true, nil
		}
		if phase != corev1.PodFailed && phase != corev1.PodSucceeded &&
			(p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded) {
			return false, fmt.Errorf("pod ended in phase %s, want %s", p.Status.Phase, phase)
		}
		if phase == corev1.PodSucceeded && p.Status.Phase == corev1.PodFailed {
			return false, errors.New("pod failed")
		}
		return false, nil
	}
}

// ContainerWaiting holds when any container waits with reason (e.g.
// CrashLoopBackOff, ImagePullBackOff, ErrImageNeverPull).
func ContainerWaiting(reason string) PodCondition {
	return func(p *corev1.Pod) (bool, error) {
		for _, s := range p.Status.ContainerStatuses {
			if s.State.Waiting != nil && s.State.Waiting.Reason == reason {
				return true, nil
			}
		}
		return false, nil
	}
}

// ContainerRestarted holds when any container restarted at least n times.
func ContainerRestarted(n int32) PodCondition {
	return func(p *corev1.Pod) (bool, error) {
		for _, s := range p.Status.ContainerStatuses {
			if s.RestartCount >= n {
				return true, nil
			}
		}
		return false, nil
	}
}

// DescribePod summarises phase and container states in one line.
func DescribePod(p *corev1.Pod) string {
	if p == nil {
		return "pod not found"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "phase=%s", p.Status.Phase)
	for _, s := range p.Status.ContainerStatuses {
		fmt.Fprintf(&b, " %s[restarts=%d", s.Name, s.RestartCount)
		switch {
		case s.State.Waiting != nil:
			fmt.Fprintf(&b, " waiting %s: %s", s.State.Waiting.Reason, s.State.Waiting.Message)
		case s.State.Running != nil:
			fmt.Fprintf(&b, " running ready=%t", s.Ready)
		case s.State.Terminated != nil:
			fmt.Fprintf(&b, " terminated %s exit=%d", s.State.Terminated.Reason, s.State.Terminated.ExitCode)
		}
		b.WriteString("]")
	}
	return b.String()
}

// NodeDescription is the data `kubectl describe node` shows.
type NodeDescription struct {
	Node   *corev1.Node
	Pods   []corev1.Pod
	Events []corev1.Event
}

// DescribeNode reads the node, the pods bound to it and its events.
func (c *Cluster) DescribeNode(ctx context.Context) (*NodeDescription, error) {
	n, err := c.Client.CoreV1().Nodes().Get(ctx, c.NodeName, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("get node %s: %w", c.NodeName, err)
	}
	pods, err := c.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("spec.nodeName", c.NodeName).String(),
	})
	if err != nil {
		return nil, fmt.Errorf("list pods on %s: %w", c.NodeName, err)
	}
	events, err := c.NodeEvents(ctx)
	if err != nil {
		return nil, err
	}
	return &NodeDescription{Node: n, Pods: pods.Items, Events: events}, nil
}

// NodeConditions returns the node's status conditions.
func (c *Cluster) NodeConditions(ctx context.Context) ([]corev1.NodeCondition, error) {
	n, err := c.Client.CoreV1().Nodes().Get(ctx, c.NodeName, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("get node %s: %w", c.NodeName, err)
	}
	return n.Status.Conditions, nil
}

// NodeCondition returns one condition, or nil when the node has none of that type.
func (c *Cluster) NodeCondition(ctx context.Context, t corev1.NodeConditionType) (*corev1.NodeCondition, error) {
	conds, err := c.NodeConditions(ctx)
	if err != nil {
		return nil, err
	}
	for i := range conds {
		if conds[i].Type == t {
			return &conds[i], nil
		}
	}
	return nil, nil
}

// NodeEvents lists events whose involved object is the node.
func (c *Cluster) NodeEvents(ctx context.Context) ([]corev1.Event, error) {
	evs, err := c.Client.CoreV1().Events("").List(ctx, metav1.ListOptions{
		FieldSelector: fields.Set{"involvedObject.kind": "Node", "involvedObject.name": c.NodeName}.String(),
	})
	if err != nil {
		return nil, fmt.Errorf("list events for node %s: %w", c.NodeName, err)
	}
	return evs.Items, nil
}

// PodEvents lists events about one pod (scheduling, pulls, back-off...).
func (c *Cluster) PodEvents(ctx context.Context, ns, name string) ([]corev1.Event, error) {
	evs, err := c.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{
		FieldSelector: fields.Set{"involvedObject.kind": "Pod", "involvedObject.name": name}.String(),
	})
	if err != nil {
		return nil, fmt.Errorf("list events for pod %s/%s: %w", ns, name, err)
	}
	return evs.Items, nil
}
