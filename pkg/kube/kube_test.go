package kube

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/node-doctor/node-doctor/pkg/check"
	"github.com/node-doctor/node-doctor/pkg/kube/kubetest"
)

const node = "node-1"

var t0 = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

func kubeletNode(extra ...corev1.NodeCondition) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}
	n.Status.Conditions = append([]corev1.NodeCondition{
		{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", Message: "kubelet is posting ready status"},
		{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientMemory"},
	}, extra...)
	return n
}

func defs() (all, enabled []*check.Definition) {
	net1 := &check.Definition{Name: "ip-forward", Conditions: []string{"NetworkConfigProblem"}}
	net2 := &check.Definition{Name: "hairpin", Conditions: []string{"NetworkConfigProblem"}}
	kern := &check.Definition{Name: "kernel-log", Conditions: []string{"KernelDeadlock"}}
	return []*check.Definition{net1, net2, kern}, []*check.Definition{net1, net2}
}

func result(name string, status check.Status, fs ...check.Finding) check.Result {
	r := check.Result{Check: name, Status: status, Findings: fs}
	if status == check.StatusError {
		r.Err = errors.New("permission denied")
	}
	return r
}

func netFinding(sev check.Severity, reason, msg string) check.Finding {
	return check.Finding{Severity: sev, Condition: "NetworkConfigProblem", Reason: reason, Message: msg}
}

// eventually polls f (real time) until it is true.
func eventually(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func countActions(cs *fake.Clientset, verb, resource, sub string) int {
	n := 0
	for _, a := range cs.Actions() {
		if a.GetVerb() == verb && a.GetResource().Resource == resource && a.GetSubresource() == sub {
			n++
		}
	}
	return n
}

func conditionOf(t *testing.T, cs *fake.Clientset, typ string) *corev1.NodeCondition {
	t.Helper()
	n, err := cs.CoreV1().Nodes().Get(context.Background(), node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n.Status.Conditions {
		if string(n.Status.Conditions[i].Type) == typ {
			return &n.Status.Conditions[i]
		}
	}
	return nil
}

type condRig struct {
	cs     *fake.Clientset
	clk    *testingclock.FakeClock
	c      *Conditions
	cancel context.CancelFunc
	done   chan struct{}
}

func startConditions(t *testing.T, n *corev1.Node, prep ...func(*fake.Clientset)) *condRig {
	t.Helper()
	cs := fake.NewClientset(n)
	for _, p := range prep {
		p(cs)
	}
	clk := testingclock.NewFakeClock(t0)
	all, enabled := defs()
	c := NewConditions(API{Client: kubetest.Adapt(cs)}, ConditionOptions{Node: node, All: all, Enabled: enabled, Heartbeat: 5 * time.Minute, Clock: clk, Metrics: NewMetrics()})
	ctx, cancel := context.WithCancel(context.Background())
	r := &condRig{cs: cs, clk: clk, c: c, cancel: cancel, done: make(chan struct{})}
	go func() { _ = c.Run(ctx); close(r.done) }()
	t.Cleanup(func() { cancel(); <-r.done })
	return r
}

func TestConditionsLifecycle(t *testing.T) {
	stale := corev1.NodeCondition{Type: "KernelDeadlock", Status: corev1.ConditionFalse, Reason: "KernelHasNoDeadlock"}
	r := startConditions(t, kubeletNode(stale))

	r.c.Report(result("ip-forward", check.StatusProblem, netFinding(check.SeverityProblem, "IPForwardDisabled", "net.ipv4.ip_forward is 0")))
	r.clk.Step(time.Second)
	time.Sleep(50 * time.Millisecond)
	if conditionOf(t, r.cs, "NetworkConfigProblem") != nil {
		t.Fatal("wrote the condition before every check driving it had run")
	}
	r.c.Report(result("hairpin", check.StatusOK, netFinding(check.SeverityOK, "HairpinEnabled", "fine")))
	eventually(t, "condition True", func() bool {
		c := conditionOf(t, r.cs, "NetworkConfigProblem")
		return c != nil && c.Status == corev1.ConditionTrue
	})
	c := conditionOf(t, r.cs, "NetworkConfigProblem")
	if c.Reason != "IPForwardDisabled" || c.Message != "net.ipv4.ip_forward is 0" || !c.LastTransitionTime.Equal(&metav1.Time{Time: r.clk.Now()}) {
		t.Errorf("condition = %+v", c)
	}
	if conditionOf(t, r.cs, "KernelDeadlock") != nil {
		t.Error("owned condition of a disabled check not removed")
	}
	if k := conditionOf(t, r.cs, "Ready"); k == nil || k.Status != corev1.ConditionTrue || k.Reason != "KubeletReady" {
		t.Errorf("kubelet's Ready touched: %+v", k)
	}
	if conditionOf(t, r.cs, "MemoryPressure") == nil {
		t.Error("kubelet's MemoryPressure removed")
	}
	writes := countActions(r.cs, "patch", "nodes", "status")

	// Same findings again: nothing is written.
	for range 3 {
		r.c.Report(result("ip-forward", check.StatusProblem, netFinding(check.SeverityProblem, "IPForwardDisabled", "net.ipv4.ip_forward is 0")))
		r.clk.Step(10 * time.Second)
	}
	time.Sleep(50 * time.Millisecond)
	if n := countActions(r.cs, "patch", "nodes", "status"); n != writes {
		t.Fatalf("%d writes for unchanged conditions", n-writes)
	}

	// Heartbeat: rewritten with a new heartbeat, same transition time.
	trans := c.LastTransitionTime
	r.clk.Step(5 * time.Minute)
	eventually(t, "heartbeat", func() bool { return countActions(r.cs, "patch", "nodes", "status") == writes+1 })
	c = conditionOf(t, r.cs, "NetworkConfigProblem")
	if !c.LastTransitionTime.Equal(&trans) || !c.LastHeartbeatTime.After(trans.Time) {
		t.Errorf("heartbeat: transition %v heartbeat %v", c.LastTransitionTime, c.LastHeartbeatTime)
	}

	// Recovery.
	r.clk.Step(time.Minute)
	r.c.Report(result("ip-forward", check.StatusOK, netFinding(check.SeverityOK, "IPForwardEnabled", "net.ipv4.ip_forward is 1")))
	eventually(t, "condition False", func() bool {
		c := conditionOf(t, r.cs, "NetworkConfigProblem")
		return c.Status == corev1.ConditionFalse
	})
	c = conditionOf(t, r.cs, "NetworkConfigProblem")
	if c.Reason != "NoNetworkConfigProblem" || !c.LastTransitionTime.After(trans.Time) {
		t.Errorf("recovered condition = %+v", c)
	}

	// A check that cannot run makes it Unknown.
	r.c.Report(result("hairpin", check.StatusError))
	eventually(t, "condition Unknown", func() bool {
		return conditionOf(t, r.cs, "NetworkConfigProblem").Status == corev1.ConditionUnknown
	})
	if c := conditionOf(t, r.cs, "NetworkConfigProblem"); c.Reason != "CheckFailed" || !strings.Contains(c.Message, "hairpin: permission denied") {
		t.Errorf("unknown condition = %+v", c)
	}
}

func TestConditionsRestartDoesNotFlap(t *testing.T) {
	hb := metav1.NewTime(t0.Add(-time.Minute))
	trans := metav1.NewTime(t0.Add(-time.Hour))
	existing := corev1.NodeCondition{Type: "NetworkConfigProblem", Status: corev1.ConditionTrue, Reason: "IPForwardDisabled",
		Message: "net.ipv4.ip_forward is 0", LastHeartbeatTime: hb, LastTransitionTime: trans}
	r := startConditions(t, kubeletNode(existing))
	r.c.Report(result("ip-forward", check.StatusProblem, netFinding(check.SeverityProblem, "IPForwardDisabled", "net.ipv4.ip_forward is 0")))
	r.c.Report(result("hairpin", check.StatusOK))
	r.clk.Step(time.Second)
	time.Sleep(100 * time.Millisecond)
	if n := countActions(r.cs, "patch", "nodes", "status"); n != 0 {
		t.Fatalf("restart wrote %d times with nothing changed", n)
	}
	// The heartbeat is due 5m after the one on the node, not after start.
	r.clk.Step(4 * time.Minute)
	eventually(t, "heartbeat", func() bool { return countActions(r.cs, "patch", "nodes", "status") == 1 })
	if c := conditionOf(t, r.cs, "NetworkConfigProblem"); !c.LastTransitionTime.Equal(&trans) {
		t.Errorf("transition time changed on restart: %v", c.LastTransitionTime)
	}
}

func TestConditionsAPIServerAway(t *testing.T) {
	var mu sync.Mutex
	down := true
	r := startConditions(t, kubeletNode(), func(cs *fake.Clientset) {
		cs.PrependReactor("patch", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
			mu.Lock()
			defer mu.Unlock()
			if down {
				return true, nil, apierrors.NewServiceUnavailable("apiserver down")
			}
			return false, nil, nil
		})
	})
	r.c.Report(result("ip-forward", check.StatusProblem, netFinding(check.SeverityProblem, "IPForwardDisabled", "off")))
	r.c.Report(result("hairpin", check.StatusOK))
	eventually(t, "a failed write", func() bool { return countActions(r.cs, "patch", "nodes", "status") >= 1 })
	for i := range 5 { // backoff 1s, 2s, 4s, ...
		r.clk.Step(time.Duration(1<<i) * time.Second)
		time.Sleep(10 * time.Millisecond)
	}
	if conditionOf(t, r.cs, "NetworkConfigProblem") != nil {
		t.Fatal("written while the API server was down")
	}
	mu.Lock()
	down = false
	mu.Unlock()
	eventually(t, "written after recovery", func() bool {
		r.clk.Step(time.Minute)
		c := conditionOf(t, r.cs, "NetworkConfigProblem")
		return c != nil && c.Status == corev1.ConditionTrue
	})
}

func TestNodeName(t *testing.T) {
	env := func(v string) func(string) string { return func(string) string { return v } }
	host := func() (string, error) { return "Worker-1\n", nil }
	if n, _ := NodeName("flag", env("env"), host); n != "flag" {
		t.Errorf("flag: %s", n)
	}
	if n, _ := NodeName("", env("env"), host); n != "env" {
		t.Errorf("env: %s", n)
	}
	if n, _ := NodeName("", env(""), host); n != "worker-1" {
		t.Errorf("hostname: %s", n)
	}
	if _, err := NodeName("", env(""), func() (string, error) { return "", errors.New("boom") }); err == nil {
		t.Error("hostname failure not reported")
	}
}

func TestRESTConfigNoCluster(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	if _, err := RESTConfig(ClientOptions{}); !errors.Is(err, ErrNoCluster) {
		t.Fatalf("err = %v", err)
	}
	if _, err := RESTConfig(ClientOptions{Kubeconfig: "/nonexistent/kubeconfig"}); err == nil || !strings.Contains(err.Error(), "/nonexistent/kubeconfig") {
		t.Fatalf("err = %v", err)
	}
}

func TestSameConditionsHealthyMessageWaits(t *testing.T) {
	cond := func(s corev1.ConditionStatus, reason, msg string) map[string]corev1.NodeCondition {
		return map[string]corev1.NodeCondition{"KubeProxyRulesProblem": {Type: "KubeProxyRulesProblem", Status: s, Reason: reason, Message: msg}}
	}
	onNode := cond(corev1.ConditionFalse, "RulesMatchAPI", "match the API for 10 service ports")
	if !sameConditions(cond(corev1.ConditionFalse, "RulesMatchAPI", "match the API for 11 service ports"), onNode) {
		t.Error("a healthy condition's new message alone forced a write before the heartbeat")
	}
	if sameConditions(cond(corev1.ConditionFalse, "ServicePortsVerified", "match the API for 10 service ports"), onNode) {
		t.Error("a new reason was not written")
	}
	if sameConditions(cond(corev1.ConditionTrue, "RulesMatchAPI", "match the API for 10 service ports"), onNode) {
		t.Error("a new status was not written")
	}
	problem := cond(corev1.ConditionTrue, "EndpointMissing", "default/a:80 misses 10.244.0.5")
	if sameConditions(cond(corev1.ConditionTrue, "EndpointMissing", "default/b:80 misses 10.244.0.6"), problem) {
		t.Error("a problem's new message was not written")
	}
}

// TestDesiredConditionsUnknownFinding: a finding marked Unknown makes its
// condition Unknown with its reason and message, without touching the
// check's other conditions; a problem elsewhere still wins.
func TestDesiredConditionsUnknownFinding(t *testing.T) {
	res := check.Result{Check: "custom-plugin", Status: check.StatusWarning, Findings: []check.Finding{
		{Check: "custom-plugin", Condition: "NTPProblem", Severity: check.SeverityWarning, Unknown: true, Reason: "NTPIsUp", Message: "Timeout when running plugin"},
		{Check: "custom-plugin", Condition: "ProbeProblem", Severity: check.SeverityOK, Reason: "ProbeIsFine", Message: "fine"},
	}}
	producers := map[string][]string{"NTPProblem": {"custom-plugin"}, "ProbeProblem": {"custom-plugin"}}
	got := desiredConditions(producers, map[string]check.Result{"custom-plugin": res}, nil, t0)
	if c := got["NTPProblem"]; c.Status != corev1.ConditionUnknown || c.Reason != "NTPIsUp" || c.Message != "Timeout when running plugin" {
		t.Errorf("NTPProblem = %+v", c)
	}
	if c := got["ProbeProblem"]; c.Status != corev1.ConditionFalse || c.Reason != "ProbeIsFine" {
		t.Errorf("ProbeProblem = %+v", c)
	}

	other := check.Result{Check: "other", Status: check.StatusProblem, Findings: []check.Finding{
		{Check: "other", Condition: "NTPProblem", Severity: check.SeverityProblem, Reason: "ClockSkew", Message: "skewed"},
	}}
	producers["NTPProblem"] = []string{"custom-plugin", "other"}
	got = desiredConditions(producers, map[string]check.Result{"custom-plugin": res, "other": other}, nil, t0)
	if c := got["NTPProblem"]; c.Status != corev1.ConditionTrue || c.Reason != "ClockSkew" {
		t.Errorf("with a problem from another check: %+v", c)
	}
	other.Findings[0].Severity, other.Findings[0].Reason = check.SeverityOK, "ClockFine"
	got = desiredConditions(producers, map[string]check.Result{"custom-plugin": res, "other": other}, nil, t0)
	if c := got["NTPProblem"]; c.Status != corev1.ConditionUnknown || c.Reason != "CheckFailed" || !strings.Contains(c.Message, "custom-plugin: Timeout when running plugin") {
		t.Errorf("two checks, one could not tell: %+v", c)
	}
}

// After a reload, conditions of checks that still run stay untouched and
// those no enabled check drives any more are removed, as for a check
// disabled at start.
func TestConditionsReconfigure(t *testing.T) {
	r := startConditions(t, kubeletNode())
	r.c.Report(result("ip-forward", check.StatusOK))
	r.c.Report(result("hairpin", check.StatusOK))
	eventually(t, "condition written", func() bool { return conditionOf(t, r.cs, "NetworkConfigProblem") != nil })
	before := *conditionOf(t, r.cs, "NetworkConfigProblem")

	all, _ := defs()
	// kernel-log now runs, hairpin does not: NetworkConfigProblem stays,
	// driven by ip-forward alone.
	r.c.Reconfigure(all, []*check.Definition{all[0], all[2]})
	r.clk.Step(time.Second)
	time.Sleep(50 * time.Millisecond)
	if c := conditionOf(t, r.cs, "NetworkConfigProblem"); c == nil || !c.LastTransitionTime.Equal(&before.LastTransitionTime) {
		t.Fatalf("condition of a check still running changed: %+v", c)
	}
	r.c.Report(result("kernel-log", check.StatusOK))
	eventually(t, "kernel-log condition written", func() bool { return conditionOf(t, r.cs, "KernelDeadlock") != nil })

	// Only hairpin: KernelDeadlock goes, NetworkConfigProblem waits for it.
	r.c.Reconfigure(all, []*check.Definition{all[1]})
	eventually(t, "condition removed", func() bool { return conditionOf(t, r.cs, "KernelDeadlock") == nil })
	if conditionOf(t, r.cs, "NetworkConfigProblem") == nil {
		t.Error("condition of a check still running removed")
	}
}
