package cri

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestMetrics(t *testing.T) {
	root := newRoot(t)
	rt, _, now := brokenNode()
	srv := serveFake(t, root, containerdSock, rt)
	m := NewMetrics()
	c := srv.client(ClientOptions{Observer: m.Observe})
	defer c.Close()
	clk := &fakeClock{now}
	src := NewSource(c, SourceOptions{Clock: clk, Metrics: m})
	if _, err := src.Snapshot(context.Background()); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	want := `
# HELP node_doctor_cri_containers Containers by CRI state in the latest snapshot.
# TYPE node_doctor_cri_containers gauge
node_doctor_cri_containers{state="created"} 1
node_doctor_cri_containers{state="exited"} 6
node_doctor_cri_containers{state="running"} 4
node_doctor_cri_containers{state="unknown"} 1
# HELP node_doctor_cri_pod_sandboxes Pod sandboxes by CRI state in the latest snapshot.
# TYPE node_doctor_cri_pod_sandboxes gauge
node_doctor_cri_pod_sandboxes{state="notready"} 3
node_doctor_cri_pod_sandboxes{state="ready"} 7
# HELP node_doctor_cri_runtime_condition CRI runtime conditions from Status (RuntimeReady, NetworkReady): 1 true, 0 false.
# TYPE node_doctor_cri_runtime_condition gauge
node_doctor_cri_runtime_condition{condition="NetworkReady"} 1
node_doctor_cri_runtime_condition{condition="RuntimeReady"} 1
# HELP node_doctor_cri_runtime_up 1 when the latest CRI snapshot succeeded, 0 when the runtime was unreachable or hung.
# TYPE node_doctor_cri_runtime_up gauge
node_doctor_cri_runtime_up 1
# HELP node_doctor_cri_container_restarts_total Container restarts seen: rises of a container's attempt count between snapshots.
# TYPE node_doctor_cri_container_restarts_total counter
node_doctor_cri_container_restarts_total 0
`
	names := []string{"node_doctor_cri_containers", "node_doctor_cri_pod_sandboxes", "node_doctor_cri_runtime_condition", "node_doctor_cri_runtime_up", "node_doctor_cri_container_restarts_total"}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(m, "node_doctor_cri_request_duration_seconds"); n != 7 {
		t.Errorf("%d methods timed, want 7", n)
	}

	// A restart: the crash-looping container comes back as attempt 4.
	rt.FakeRuntimeService.Lock()
	rt.Containers["c-api-4"] = ctr{id: "c-api-4", sandbox: "sb-crash", name: "api", attempt: 4, state: running}.fake(nil)
	rt.FakeRuntimeService.Unlock()
	clk.now = clk.now.Add(time.Minute)
	rt.FakeImageService.InjectError("ListImages", status.Error(codes.Unavailable, "gone"))
	if _, err := src.Snapshot(context.Background()); err != nil {
		t.Fatal(err)
	}
	if v := testutil.ToFloat64(m.restarts); v != 1 {
		t.Errorf("restarts %v, want 1", v)
	}
	if v := testutil.ToFloat64(m.errs.WithLabelValues("ListImages", "Unavailable")); v != 1 {
		t.Errorf("ListImages errors %v", v)
	}
	m.observe(nil, errors.New("down"))
	if v := testutil.ToFloat64(m.up); v != 0 {
		t.Errorf("up %v after a failed snapshot", v)
	}
}
