package cri

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	critest "k8s.io/cri-api/pkg/apis/testing"

	"github.com/node-doctor/node-doctor/pkg/check"
)

// fakePods is the API's view of the node's pods.
type fakePods struct {
	pods map[string]*corev1.Pod // namespace/name
	err  error
}

func (f fakePods) Pod(namespace, name string) (*corev1.Pod, error) {
	if f.err != nil {
		return nil, f.err
	}
	return f.pods[namespace+"/"+name], nil
}

// apiPod is the pod the fake sandbox builder names ns/name.
func apiPod(ns, name string, mod ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + ns + "-" + name)},
		Spec:       corev1.PodSpec{RestartPolicy: corev1.RestartPolicyAlways, Containers: []corev1.Container{{Name: "app"}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
	for _, m := range mod {
		m(p)
	}
	return p
}

func podsOf(ps ...*corev1.Pod) fakePods {
	m := map[string]*corev1.Pod{}
	for _, p := range ps {
		m[p.Namespace+"/"+p.Name] = p
	}
	return fakePods{pods: m}
}

func terminating(p *corev1.Pod) {
	now := metav1.NewTime(t0)
	p.DeletionTimestamp = &now
}

var errNoCluster = errors.New("no cluster")

func sandboxReasons(s *Snapshot, pods Pods) []string {
	set := &SandboxSettings{NotReadyAfter: time.Minute, EmptyAfter: 3 * time.Minute}
	var out []string
	for _, f := range sandboxFindings(s, set, pods) {
		if f.Severity != check.SeverityOK {
			out = append(out, f.Reason+" "+f.Object.String())
		}
	}
	return out
}

func setNode(rt fakeRuntime, sbs []*critest.FakePodSandbox, cs []ctr) {
	rt.SetFakeSandboxes(sbs)
	var fcs []*critest.FakeContainer
	for _, c := range cs {
		var sb *critest.FakePodSandbox
		for _, s := range sbs {
			if s.Id == c.sandbox {
				sb = s
			}
		}
		fcs = append(fcs, c.fake(sb))
	}
	rt.SetFakeContainers(fcs)
}

// The report of issue #18: a pod that ran for a minute is deleted; kubelet
// removes its containers, then its sandbox. The clock of a NotReady sandbox
// starts when the agent first sees it so, not at the sandbox's creation.
func TestSandboxNotReadyClockStartsWhenFirstSeen(t *testing.T) {
	rt := newFakeRuntime()
	now := t0.Add(73 * time.Second)
	setNode(rt, []*critest.FakePodSandbox{sandbox("sb-web", "shop", "web", false, t0)}, nil)
	clk := &fakeClock{now}
	src := NewSource(rt, SourceOptions{Clock: clk, MaxAge: time.Millisecond})
	round := func(d time.Duration) *Snapshot {
		t.Helper()
		clk.now = clk.now.Add(d)
		s, err := src.Snapshot(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// The API says the pod should be running: kubelet should replace it.
	api := podsOf(apiPod("shop", "web"))
	for _, d := range []time.Duration{0, 15 * time.Second, 30 * time.Second} {
		if got := sandboxReasons(round(d), api); got != nil {
			t.Errorf("NotReady for %s after running 73s: %v", clk.now.Sub(now), got)
		}
	}
	s := round(16 * time.Second) // 61s after it was first seen NotReady
	// Without an API nothing says the pod was not deleted: kubelet removes
	// a deleted pod's sandbox only at its next garbage collection.
	if got := sandboxReasons(s, fakePods{err: errNoCluster}); got != nil {
		t.Errorf("no API, no container: %v", got)
	}
	f := sandboxFindings(s, &SandboxSettings{NotReadyAfter: time.Minute, EmptyAfter: time.Minute}, api)
	if len(f) != 1 || f[0].Reason != "SandboxNotReady" || !strings.Contains(f[0].Message, "NotReady for 1m1s") ||
		!f[0].Time.Equal(now) || f[0].Details["not_ready_since_from"] != "first_seen" {
		t.Errorf("NotReady for 61s: %+v", f)
	}

	// Gone from the runtime: forgotten, so a sandbox listed again starts afresh.
	setNode(rt, nil, nil)
	if s := round(time.Second); len(src.notReady) != 0 || !s.NotReadySeen("sb-web").IsZero() {
		t.Errorf("first-seen state kept for a removed sandbox: %v", src.notReady)
	}
	setNode(rt, []*critest.FakePodSandbox{sandbox("sb-web", "shop", "web", false, t0)}, nil)
	if s := round(time.Second); !s.NotReadySeen("sb-web").Equal(clk.now) || sandboxReasons(s, api) != nil {
		t.Errorf("listed again: first seen %s, want %s", s.NotReadySeen("sb-web"), clk.now)
	}
}

// One-shot check: no earlier observation. An hour-old NotReady sandbox
// without containers says nothing about how long it has been NotReady.
func TestSandboxOneShot(t *testing.T) {
	rt := newFakeRuntime()
	now := t0.Add(time.Hour)
	sbs := []*critest.FakePodSandbox{
		sandbox("sb-empty", "shop", "deleted", false, t0),
		sandbox("sb-old-fin", "shop", "stuck", false, t0),
		sandbox("sb-new-fin", "shop", "stopping", false, t0),
		sandbox("sb-live", "shop", "lostnet", false, t0),
	}
	setNode(rt, sbs, []ctr{
		{id: "c-stuck", sandbox: "sb-old-fin", name: "app", state: exited, exit: 137, finished: now.Add(-5 * time.Minute)},
		{id: "c-stopping", sandbox: "sb-new-fin", name: "app", state: exited, exit: 0, finished: now.Add(-10 * time.Second)},
		{id: "c-live", sandbox: "sb-live", name: "app", state: running},
	})
	s := mustSnapshot(t, rt, now)
	if got := sandboxReasons(s, nil); got != nil {
		t.Errorf("one-shot without an API: %v", got)
	}
	// With the API: the pod whose containers all exited five minutes ago is
	// neither finished nor being deleted, so its sandbox has been NotReady
	// since about then; the one that stopped 10s ago is in its grace time.
	pods := podsOf(apiPod("shop", "stuck"), apiPod("shop", "stopping"), apiPod("shop", "lostnet"), apiPod("shop", "deleted"))
	f := sandboxFindings(s, &SandboxSettings{NotReadyAfter: time.Minute, EmptyAfter: time.Minute}, pods)
	if len(f) != 1 || f[0].Object.Name != "stuck" || f[0].Details["not_ready_since_from"] != "containers_finished" ||
		!strings.Contains(f[0].Message, "NotReady for 5m0s, all its containers exited") || !f[0].Time.Equal(now.Add(-5*time.Minute)) {
		t.Errorf("one-shot with the API: %+v", f)
	}
	// The same pod completed (a Job) or being deleted: normal.
	for _, p := range []*corev1.Pod{
		apiPod("shop", "stuck", func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }),
		apiPod("shop", "stuck", func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed }),
		apiPod("shop", "stuck", terminating),
	} {
		if got := sandboxReasons(s, podsOf(p)); got != nil {
			t.Errorf("pod %s/%s phase %s deleting %v: %v", p.Namespace, p.Name, p.Status.Phase, p.DeletionTimestamp != nil, got)
		}
	}
}

// A sandbox whose pod is being deleted, or is gone from the API, is being
// torn down however long kubelet takes; without an API the first-seen
// clock alone decides.
func TestSandboxOfDeletedPod(t *testing.T) {
	rt := newFakeRuntime()
	now := t0.Add(time.Hour)
	setNode(rt, []*critest.FakePodSandbox{
		sandbox("sb-empty", "shop", "web", false, t0),
		sandbox("sb-live", "shop", "api", false, t0),
	}, []ctr{{id: "c-api", sandbox: "sb-live", name: "app", state: running}})
	s := agentSnapshot(t, rt, now.Add(-5*time.Minute), now)
	for name, tt := range map[string]struct {
		pods Pods
		want string
	}{
		// Without an API only a sandbox with running containers is dated:
		// one without any is most likely waiting for kubelet's GC.
		"no API":      {fakePods{err: errNoCluster}, "SandboxNotReady Pod shop/api"},
		"nil API":     {nil, "SandboxNotReady Pod shop/api"},
		"active":      {podsOf(apiPod("shop", "web"), apiPod("shop", "api")), "SandboxNotReady Pod shop/api|SandboxNotReady Pod shop/web"},
		"gone":        {podsOf(), ""},
		"terminating": {podsOf(apiPod("shop", "web", terminating), apiPod("shop", "api", terminating)), ""},
		// Deleted and created again under the same name, not yet started here.
		"new UID": {podsOf(apiPod("shop", "web", func(p *corev1.Pod) { p.UID = "uid-2" }), apiPod("shop", "api", func(p *corev1.Pod) { p.UID = "uid-3" })), ""},
		// A static pod's mirror carries the UID kubelet runs it under.
		"mirror": {podsOf(apiPod("shop", "web", func(p *corev1.Pod) {
			p.UID, p.Annotations = "mirror-uid", map[string]string{mirrorAnnotation: "uid-shop-web"}
		})), "SandboxNotReady Pod shop/web"},
	} {
		if got := strings.Join(sandboxReasons(s, tt.pods), "|"); got != tt.want {
			t.Errorf("%s: got %q, want %q", name, got, tt.want)
		}
	}
}

// A pod deleted and created again under the same name (a StatefulSet
// replica) has a new UID and a new sandbox; the old one is a leftover.
func TestSandboxReplacedUnderTheSameName(t *testing.T) {
	rt := newFakeRuntime()
	now := t0.Add(time.Hour)
	old := sandbox("sb-old", "db", "pg-0", false, t0)
	repl := sandbox("sb-new", "db", "pg-0", true, now.Add(-3*time.Minute))
	repl.Metadata.Uid, repl.Labels[LabelPodUID] = "uid-pg-0-new", "uid-pg-0-new"
	// The old pod's container not gone yet, and no API to ask.
	setNode(rt, []*critest.FakePodSandbox{old, repl}, []ctr{
		{id: "c-old", sandbox: "sb-old", name: "pg", state: running},
		{id: "c-new", sandbox: "sb-new", name: "pg", state: running},
	})
	s := agentSnapshot(t, rt, now.Add(-5*time.Minute), now)
	if got := sandboxReasons(s, nil); got != nil {
		t.Errorf("replaced by a ready sandbox of the same name: %v", got)
	}
	// Only a sandbox of another pod is newer: not replaced.
	setNode(rt, []*critest.FakePodSandbox{old, sandbox("sb-other", "db", "pg-1", true, now)}, nil)
	s = agentSnapshot(t, rt, now.Add(-5*time.Minute), now)
	if got := sandboxReasons(s, podsOf(apiPod("db", "pg-0"))); strings.Join(got, "|") != "SandboxNotReady Pod db/pg-0" {
		t.Errorf("not replaced: %v", got)
	}
}

// A container created but never started in a sandbox that kubelet stopped
// (the pod was deleted between create and start) will never start: not
// stuck. In a ready sandbox it is.
func TestStuckCreatedInStoppedSandbox(t *testing.T) {
	rt := newFakeRuntime()
	now := t0.Add(time.Hour)
	setNode(rt, []*critest.FakePodSandbox{
		sandbox("sb-gone", "web", "old-rs-abc", false, t0),
		sandbox("sb-up", "web", "new-rs-def", true, t0),
	}, []ctr{
		{id: "c-gone", sandbox: "sb-gone", name: "app", state: created, created: now.Add(-10 * time.Minute)},
		{id: "c-up", sandbox: "sb-up", name: "app", state: created, created: now.Add(-10 * time.Minute)},
	})
	s := mustSnapshot(t, rt, now)
	if got := reasons(stuckFindings(s, &StuckSettings{After: 2 * time.Minute})); strings.Join(got, "|") != "problem ContainerStuckCreated Pod web/new-rs-def container app" {
		t.Errorf("got %v", got)
	}
}

// Loops are judged only in pods kubelet keeps running: not in one being
// deleted (its containers exit because kubelet stops them) and, for exit 0,
// not where kubelet does not restart after success (a Job with
// restartPolicy OnFailure that succeeded on its third try, an init
// container).
func TestLoopsLeaveCompletedAndDeletedPodsAlone(t *testing.T) {
	rt := newFakeRuntime()
	now := t0.Add(time.Hour)
	fin := now.Add(-5 * time.Second)
	setNode(rt, []*critest.FakePodSandbox{
		sandbox("sb-job", "batch", "import", true, t0),
		sandbox("sb-init", "shop", "api", true, t0),
		sandbox("sb-del", "shop", "web", true, t0),
	}, []ctr{
		{id: "c-job", sandbox: "sb-job", name: "app", attempt: 2, state: exited, exit: 0, reason: "Completed", finished: fin},
		{id: "c-side", sandbox: "sb-job", name: "proxy", state: running},
		{id: "c-init", sandbox: "sb-init", name: "wait-db", attempt: 3, state: exited, exit: 0, reason: "Completed", finished: fin},
		{id: "c-api", sandbox: "sb-init", name: "app", state: running},
		// Killed by kubelet on deletion after two earlier restarts.
		{id: "c-web", sandbox: "sb-del", name: "app", attempt: 2, state: exited, exit: 143, reason: "Error", finished: fin},
		{id: "c-web0", sandbox: "sb-del", name: "sidecar", attempt: 2, state: exited, exit: 0, reason: "Completed", finished: fin},
	})
	s := mustSnapshot(t, rt, now)
	set := defaultLoopSettings()
	pods := podsOf(
		apiPod("batch", "import", func(p *corev1.Pod) { p.Spec.RestartPolicy = corev1.RestartPolicyOnFailure }),
		apiPod("shop", "api", func(p *corev1.Pod) { p.Spec.InitContainers = []corev1.Container{{Name: "wait-db"}} }),
		apiPod("shop", "web", terminating),
	)
	if got := reasons(restartLoopFindings(s, set, pods)); strings.Join(got, "|") != "ok NoRestartLoops node" {
		t.Errorf("restart loops with the API: %v", got)
	}
	if got := reasons(crashLoopFindings(s, set, nil, pods)); strings.Join(got, "|") != "ok NoCrashLoops node" {
		t.Errorf("crash loops with the API: %v", got)
	}
	// The same pods kept running under restartPolicy Always: loops.
	always := podsOf(apiPod("batch", "import"), apiPod("shop", "api", func(p *corev1.Pod) {
		always := corev1.ContainerRestartPolicyAlways
		p.Spec.InitContainers = []corev1.Container{{Name: "wait-db", RestartPolicy: &always}}
	}), apiPod("shop", "web"))
	if got := reasons(restartLoopFindings(s, set, always)); len(got) != 3 {
		t.Errorf("restart loops in restartPolicy Always pods: %v", got)
	}
	if got := reasons(crashLoopFindings(s, set, nil, always)); strings.Join(got, "|") != "problem CrashLoop Pod shop/web container app" {
		t.Errorf("crash loop in a running pod: %v", got)
	}
}
