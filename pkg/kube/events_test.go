package kube

import (
	"context"
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

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/node-doctor/node-doctor/pkg/check"
	"github.com/node-doctor/node-doctor/pkg/kube/kubetest"
)

type evRig struct {
	cs  *fake.Clientset
	clk *testingclock.FakeClock
	e   *Events
	m   *Metrics
}

func startEvents(t *testing.T, cs *fake.Clientset, queue int) *evRig {
	t.Helper()
	clk := testingclock.NewFakeClock(t0)
	m := NewMetrics()
	e := NewEvents(API{Client: kubetest.Adapt(cs)}, EventOptions{Node: node, QueueSize: queue, QPS: 1000, Burst: 1000, Clock: clk, Metrics: m})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = e.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return &evRig{cs: cs, clk: clk, e: e, m: m}
}

func events(t *testing.T, cs *fake.Clientset) []corev1.Event {
	t.Helper()
	l, err := cs.CoreV1().Events("").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return l.Items
}

func TestEventsOnNodeAggregated(t *testing.T) {
	r := startEvents(t, fake.NewClientset(), 0)
	bad := result("hairpin", check.StatusProblem, netFinding(check.SeverityProblem, "HairpinModeOff", "bridge cni0: off on veth1"))
	good := result("hairpin", check.StatusOK, netFinding(check.SeverityOK, "HairpinEnabled", "fine"))

	r.e.Report(bad)
	eventually(t, "event created", func() bool { return len(events(t, r.cs)) == 1 })
	ev := events(t, r.cs)[0]
	if ev.Namespace != "default" || ev.InvolvedObject.Kind != "Node" || ev.InvolvedObject.Name != node || string(ev.InvolvedObject.UID) != node ||
		ev.Reason != "HairpinModeOff" || ev.Type != corev1.EventTypeWarning || ev.Source.Component != "node-doctor" || ev.Source.Host != node || ev.Count != 1 {
		t.Fatalf("event = %+v", ev)
	}

	// Still broken: no new event. Fixed, then broken again: the same object, count 2.
	r.e.Report(bad)
	r.e.Report(good)
	r.e.Report(bad)
	eventually(t, "count 2", func() bool { ev := events(t, r.cs); return len(ev) == 1 && ev[0].Count == 2 })
	if n := countActions(r.cs, "create", "events", ""); n != 1 {
		t.Errorf("%d events created, want 1", n)
	}
}

func TestEventsOnPodWithOriginalTime(t *testing.T) {
	r := startEvents(t, fake.NewClientset(), 0)
	when := t0.Add(-90 * time.Second)
	f := check.Finding{Severity: check.SeverityProblem, Reason: "OOMKilled", Message: "container app was OOM-killed", Time: when,
		Object: check.Object{Kind: check.KindPod, Namespace: "shop", Name: "web-1", UID: "uid-1", Container: "app"}}
	r.e.Report(result("kernel-log", check.StatusProblem, f))
	eventually(t, "pod event", func() bool { return len(events(t, r.cs)) == 1 })
	ev := events(t, r.cs)[0]
	if ev.Namespace != "shop" || ev.InvolvedObject.Kind != "Pod" || ev.InvolvedObject.UID != "uid-1" ||
		ev.InvolvedObject.FieldPath != "spec.containers{app}" || !ev.FirstTimestamp.Time.Equal(when) {
		t.Fatalf("pod event = %+v", ev)
	}
	// It happens again later: same object, count 2, last time moved.
	f.Time = when.Add(time.Minute)
	r.e.Report(result("kernel-log", check.StatusProblem, f))
	eventually(t, "count 2", func() bool { return events(t, r.cs)[0].Count == 2 })
	if ev := events(t, r.cs)[0]; !ev.LastTimestamp.Time.Equal(f.Time) {
		t.Errorf("last timestamp %v, want %v", ev.LastTimestamp, f.Time)
	}
}

func TestEventsRestartNoDuplicates(t *testing.T) {
	cs := fake.NewClientset()
	bad := result("hairpin", check.StatusProblem, netFinding(check.SeverityProblem, "HairpinModeOff", "bridge cni0: off on veth1"))
	r1 := startEvents(t, cs, 0)
	r1.e.Report(bad)
	eventually(t, "event", func() bool { return len(events(t, cs)) == 1 })

	r2 := startEvents(t, cs, 0) // a restarted agent sees the same problem
	r2.e.Report(bad)
	eventually(t, "the restarted agent looked", func() bool { return countActions(cs, "get", "events", "") >= 1 })
	time.Sleep(50 * time.Millisecond)
	if ev := events(t, cs); len(ev) != 1 || ev[0].Count != 1 {
		t.Fatalf("after restart: %d events, count %d", len(ev), ev[0].Count)
	}
}

func TestEventsWaitForAPIServer(t *testing.T) {
	cs := fake.NewClientset()
	var mu sync.Mutex
	down := true
	cs.PrependReactor("*", "events", func(k8stesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		if down {
			return true, nil, apierrors.NewServiceUnavailable("apiserver down")
		}
		return false, nil, nil
	})
	r := startEvents(t, cs, 0)
	for i := range 3 {
		f := netFinding(check.SeverityProblem, "HairpinModeOff", "off")
		f.Time = t0.Add(time.Duration(i) * time.Second)
		r.e.Report(result("hairpin", check.StatusProblem, f))
	}
	eventually(t, "queued", func() bool { return testutil.ToFloat64(r.m.EventsQueued) == 1 })
	mu.Lock()
	down = false
	mu.Unlock()
	eventually(t, "written after recovery", func() bool {
		r.clk.Step(time.Minute)
		ev := events(t, cs)
		return len(ev) == 1 && ev[0].Count == 3
	})
	if testutil.ToFloat64(r.m.EventsQueued) != 0 {
		t.Error("queue not drained")
	}
}

func TestEventsDroppedAreCounted(t *testing.T) {
	cs := fake.NewClientset()
	cs.PrependReactor("*", "events", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewServiceUnavailable("down")
	})
	r := startEvents(t, cs, 2)
	for _, reason := range []string{"A", "B", "C", "D"} {
		r.e.Report(result("x-"+reason, check.StatusProblem, netFinding(check.SeverityProblem, reason, "m")))
	}
	eventually(t, "drops counted", func() bool {
		return testutil.ToFloat64(r.m.EventsDropped.WithLabelValues("queue_full")) >= 1
	})

	cs2 := fake.NewClientset()
	cs2.PrependReactor("create", "events", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewInvalid(corev1.SchemeGroupVersion.WithKind("Event").GroupKind(), "x", nil)
	})
	r2 := startEvents(t, cs2, 0)
	r2.e.Report(result("hairpin", check.StatusProblem, netFinding(check.SeverityProblem, "HairpinModeOff", "m")))
	eventually(t, "rejected counted", func() bool {
		return testutil.ToFloat64(r2.m.EventsDropped.WithLabelValues("rejected")) == 1
	})
}

func TestSanitize(t *testing.T) {
	if got := sanitize("a\x1b[31mb\nc", 100); got != "a [31mb c" {
		t.Errorf("got %q", got)
	}
	if got := sanitize(string(make([]byte, 2000)), 10); len(got) != 10 {
		t.Errorf("len %d", len(got))
	}
}

func TestEventsKeepLogsOut(t *testing.T) {
	f := check.Finding{Severity: check.SeverityProblem, Reason: "CrashLoop", Message: "exits with code 1",
		LogExcerpt: "last log line: \"password=hunter2\x1b[0m\"", Object: check.Object{Kind: check.KindPod, Namespace: "a", Name: "b", UID: "u"}}
	r := startEvents(t, fake.NewClientset(), 0)
	r.e.Report(result("cri-crash-loop", check.StatusProblem, f))
	eventually(t, "event", func() bool { return len(events(t, r.cs)) == 1 })
	if ev := events(t, r.cs)[0]; strings.Contains(ev.Message, "hunter2") {
		t.Fatalf("log excerpt copied into the event by default: %q", ev.Message)
	}

	cs := fake.NewClientset()
	e := NewEvents(API{Client: kubetest.Adapt(cs)}, EventOptions{Node: node, QPS: 1000, Burst: 1000, IncludeLogs: true})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = e.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	e.Report(result("cri-crash-loop", check.StatusProblem, f))
	eventually(t, "event with logs", func() bool { return len(events(t, cs)) == 1 })
	if ev := events(t, cs)[0]; !strings.Contains(ev.Message, "hunter2") || strings.Contains(ev.Message, "\x1b") {
		t.Fatalf("enabled excerpt missing or not sanitized: %q", ev.Message)
	}
}
