package metrics

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/node-doctor/node-doctor/pkg/check"
)

func defs() []*check.Definition {
	return []*check.Definition{{Name: "hairpin"}, {Name: "ip-forward"}}
}

func TestMetricNamesPassPromlint(t *testing.T) {
	r := New(defs())
	r.Report(check.Result{Check: "hairpin", Status: check.StatusProblem, Start: time.Now(), Findings: []check.Finding{
		{Severity: check.SeverityProblem, Condition: "NetworkConfigProblem", Reason: "HairpinModeOff"},
	}})
	mfs, err := r.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if isNPDName(p.Metric) {
			continue // NPD's name, kept for its users' alerts
		}
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	for _, mf := range mfs {
		if n := mf.GetName(); !strings.HasPrefix(n, "node_doctor_") && !strings.HasPrefix(n, "go_") && !strings.HasPrefix(n, "process_") && !isNPDName(n) {
			t.Errorf("metric %s lacks the node_doctor_ prefix", n)
		}
	}
}

func TestReportedResults(t *testing.T) {
	r := New(defs())
	start := time.Unix(1700000000, 0)
	r.Report(check.Result{Check: "hairpin", Status: check.StatusProblem, Start: start, Duration: 3 * time.Millisecond, Findings: []check.Finding{
		{Severity: check.SeverityProblem, Condition: "NetworkConfigProblem", Reason: "HairpinModeOff"},
		{Severity: check.SeverityProblem, Condition: "NetworkConfigProblem", Reason: "HairpinModeOff"},
		{Severity: check.SeverityOK, Condition: "NetworkConfigProblem", Reason: "HairpinEnabled"},
	}})
	r.Report(check.Result{Check: "ip-forward", Status: check.StatusError, Start: start, Err: fmt.Errorf("x: %w", check.ErrTimeout)})
	r.Report(check.Result{Check: "ip-forward", Status: check.StatusError, Start: start, Err: fmt.Errorf("x: %w", check.ErrStillRunning)})
	r.Report(check.Result{Check: "ip-forward", Status: check.StatusError, Start: start, Err: errors.New("denied")})

	want := `
# HELP node_doctor_check_status Outcome of the latest run of a check: 1 for its current status, 0 for the others.
# TYPE node_doctor_check_status gauge
node_doctor_check_status{check="hairpin",status="error"} 0
node_doctor_check_status{check="hairpin",status="not_applicable"} 0
node_doctor_check_status{check="hairpin",status="ok"} 0
node_doctor_check_status{check="hairpin",status="problem"} 1
node_doctor_check_status{check="hairpin",status="warning"} 0
node_doctor_check_status{check="ip-forward",status="error"} 1
node_doctor_check_status{check="ip-forward",status="not_applicable"} 0
node_doctor_check_status{check="ip-forward",status="ok"} 0
node_doctor_check_status{check="ip-forward",status="problem"} 0
node_doctor_check_status{check="ip-forward",status="warning"} 0
# HELP node_doctor_findings Findings of warning or problem severity in the latest run of a check.
# TYPE node_doctor_findings gauge
node_doctor_findings{check="hairpin",condition="NetworkConfigProblem",reason="HairpinModeOff",severity="problem"} 2
# HELP node_doctor_check_errors_total Check runs that could not complete (errors, timeouts, skips).
# TYPE node_doctor_check_errors_total counter
node_doctor_check_errors_total{check="hairpin"} 0
node_doctor_check_errors_total{check="ip-forward"} 3
# HELP node_doctor_check_timeouts_total Check runs abandoned because they outlived their timeout.
# TYPE node_doctor_check_timeouts_total counter
node_doctor_check_timeouts_total{check="hairpin"} 0
node_doctor_check_timeouts_total{check="ip-forward"} 1
# HELP node_doctor_check_skipped_total Check runs skipped because the previous run had not returned.
# TYPE node_doctor_check_skipped_total counter
node_doctor_check_skipped_total{check="hairpin"} 0
node_doctor_check_skipped_total{check="ip-forward"} 1
`
	if err := testutil.GatherAndCompare(r.Registry, strings.NewReader(want),
		"node_doctor_check_status", "node_doctor_findings", "node_doctor_check_errors_total",
		"node_doctor_check_timeouts_total", "node_doctor_check_skipped_total"); err != nil {
		t.Fatal(err)
	}

	// A finding that went away leaves no stale series.
	r.Report(check.Result{Check: "hairpin", Status: check.StatusOK, Start: start, Findings: []check.Finding{
		{Severity: check.SeverityOK, Reason: "HairpinEnabled"},
	}})
	if n := testutil.CollectAndCount(r, "node_doctor_findings"); n != 0 {
		t.Fatalf("%d findings series left after recovery", n)
	}
}

func TestCheckIntervals(t *testing.T) {
	r := New([]*check.Definition{{Name: "hairpin", Interval: 30 * time.Second}, {Name: "kernel-log", Interval: 10 * time.Minute}})
	want := `
# HELP node_doctor_check_interval_seconds How often a check is configured to run.
# TYPE node_doctor_check_interval_seconds gauge
node_doctor_check_interval_seconds{check="hairpin"} 30
node_doctor_check_interval_seconds{check="kernel-log"} 600
`
	if err := testutil.GatherAndCompare(r.Registry, strings.NewReader(want), "node_doctor_check_interval_seconds"); err != nil {
		t.Fatal(err)
	}
}

type collectingCheck struct{ prometheus.Gauge }

func (collectingCheck) Run(context.Context) ([]check.Finding, error) { return nil, nil }

func TestRegisterCheckCollectors(t *testing.T) {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "node_doctor_test_lines_read", Help: "x"})
	defs := []*check.Definition{{Name: "plain", Check: check.Func(func(context.Context) ([]check.Finding, error) { return nil, nil })},
		{Name: "collects", Check: collectingCheck{g}}}
	r := New(defs)
	if err := r.RegisterCheckCollectors(defs); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(r.Registry, "node_doctor_test_lines_read"); n != 1 {
		t.Fatalf("check's own metric not exposed: %d", n)
	}
	if err := r.RegisterCheckCollectors(defs); err == nil {
		t.Fatal("registering twice must fail")
	}
}
