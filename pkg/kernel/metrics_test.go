package kernel

import (
	"context"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	clocktesting "k8s.io/utils/clock/testing"
)

func TestMetrics(t *testing.T) {
	fake := &fakeKmsg{items: []any{
		[]byte("3,1,9990000000,-;nf_conntrack: table full, dropping packet\n"),
		[]byte("garbage\n"),
		[]byte("6,2,9991000000,-;cni0: port 1(veth0) entered blocking state\n"),
	}}
	fsys := kmsgFS{MapFS: fstest.MapFS{"proc/uptime": {Data: []byte("10000.00 1.00\n")}}, fake: fake}
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 23, 14, 0, 0, 0, time.UTC))
	lc := Log(fsys, clk, nil).Check.(*LogChecker)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := lc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(lc)
	want := `
# HELP node_doctor_kernel_log_lines_read_total Log lines read by the kernel-log check.
# TYPE node_doctor_kernel_log_lines_read_total counter
node_doctor_kernel_log_lines_read_total{source="kernel-monitor"} 2
# HELP node_doctor_kernel_log_matches_total Log lines that matched a rule, by the rule's reason.
# TYPE node_doctor_kernel_log_matches_total counter
node_doctor_kernel_log_matches_total{reason="ConntrackTableFull",source="kernel-monitor"} 1
# HELP node_doctor_kernel_log_parse_errors_total Log records that could not be parsed.
# TYPE node_doctor_kernel_log_parse_errors_total counter
node_doctor_kernel_log_parse_errors_total{source="kernel-monitor"} 1
`
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := testutil.GatherAndCompare(reg, strings.NewReader(want), "node_doctor_kernel_log_lines_read_total",
			"node_doctor_kernel_log_matches_total", "node_doctor_kernel_log_parse_errors_total")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
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
}
