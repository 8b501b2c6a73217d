package metrics

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/node-doctor/node-doctor/pkg/check"
)

func TestNPDProblemMetrics(t *testing.T) {
	cond := func(n string) *check.Definition {
		return &check.Definition{Name: n, Conditions: []string{"KernelDeadlock"}}
	}
	r := New([]*check.Definition{cond("kernel-log"), {Name: "cri-crash-loop"}})
	res := func(chk string, fs ...check.Finding) check.Result {
		st := check.StatusOK
		for _, f := range fs {
			if f.Severity == check.SeverityProblem {
				st = check.StatusProblem
			}
		}
		return check.Result{Check: chk, Status: st, Start: time.Now(), Findings: fs}
	}
	ok := check.Finding{Severity: check.SeverityOK, Condition: "KernelDeadlock", Reason: "KernelHasNoDeadlock"}
	hung := check.Finding{Severity: check.SeverityProblem, Condition: "KernelDeadlock", Reason: "TaskHung", Message: "task hung"}
	docker := check.Finding{Severity: check.SeverityProblem, Condition: "KernelDeadlock", Reason: "DockerHung", Message: "docker hung"}
	crash := check.Finding{Severity: check.SeverityWarning, Reason: "CrashLoopBackOff", Message: "web crashes", Object: check.Object{Kind: check.KindPod, Name: "web"}}

	want := func(step, exp string) {
		t.Helper()
		if err := testutil.GatherAndCompare(r.Registry, strings.NewReader(exp), "problem_counter", "problem_gauge"); err != nil {
			t.Fatalf("%s: %v", step, err)
		}
	}
	r.Report(res("kernel-log", ok))
	r.Report(res("cri-crash-loop"))
	want("healthy", `
# HELP problem_gauge Whether a specific type of problem is affecting the node or not (node-problem-detector's metric).
# TYPE problem_gauge gauge
problem_gauge{reason="KernelHasNoDeadlock",type="KernelDeadlock"} 0
`)
	r.Report(res("kernel-log", hung))
	r.Report(res("kernel-log", hung)) // still True: counted once
	r.Report(res("cri-crash-loop", crash))
	r.Report(res("cri-crash-loop", crash)) // the same finding again: not new
	r.Report(check.Result{Check: "cri-crash-loop", Status: check.StatusError, Err: errors.New("timeout")})
	r.Report(res("cri-crash-loop", crash)) // after a failed run: still the same problem
	want("problems", `
# HELP problem_counter Number of times a specific type of problem have occurred (node-problem-detector's metric).
# TYPE problem_counter counter
problem_counter{reason="CrashLoopBackOff"} 1
problem_counter{reason="TaskHung"} 1
# HELP problem_gauge Whether a specific type of problem is affecting the node or not (node-problem-detector's metric).
# TYPE problem_gauge gauge
problem_gauge{reason="KernelHasNoDeadlock",type="KernelDeadlock"} 0
problem_gauge{reason="TaskHung",type="KernelDeadlock"} 1
`)
	// The reason changes: the old series goes to 0, as in NPD.
	r.Report(res("kernel-log", docker))
	r.Report(res("kernel-log", ok))
	r.Report(res("cri-crash-loop"))
	r.Report(res("cri-crash-loop", crash)) // back after a clean run: new again
	want("changed and cleared", `
# HELP problem_counter Number of times a specific type of problem have occurred (node-problem-detector's metric).
# TYPE problem_counter counter
problem_counter{reason="CrashLoopBackOff"} 2
problem_counter{reason="DockerHung"} 1
problem_counter{reason="TaskHung"} 1
# HELP problem_gauge Whether a specific type of problem is affecting the node or not (node-problem-detector's metric).
# TYPE problem_gauge gauge
problem_gauge{reason="DockerHung",type="KernelDeadlock"} 0
problem_gauge{reason="KernelHasNoDeadlock",type="KernelDeadlock"} 0
problem_gauge{reason="TaskHung",type="KernelDeadlock"} 0
`)
}

// rulesCheck is a check whose rules come from NPD files.
type rulesCheck struct{ rules []check.RuleReason }

func (rulesCheck) Run(context.Context) ([]check.Finding, error) { return nil, nil }
func (r rulesCheck) Rules() []check.RuleReason                  { return r.rules }

func TestNPDProblemMetricsStartAtZero(t *testing.T) {
	rules := rulesCheck{[]check.RuleReason{{Reason: "OOMKilling"}, {Reason: "TaskHung"}, {Condition: "KernelDeadlock", Reason: "DockerHung"}}}
	kl := &check.Definition{Name: "kernel-log", Conditions: []string{"KernelDeadlock"}, Check: rules}
	r := New([]*check.Definition{kl, {Name: "cri-crash-loop"}})
	exp := `
# HELP problem_counter Number of times a specific type of problem have occurred (node-problem-detector's metric).
# TYPE problem_counter counter
problem_counter{reason="DockerHung"} 0
problem_counter{reason="OOMKilling"} 0
problem_counter{reason="TaskHung"} 0
# HELP problem_gauge Whether a specific type of problem is affecting the node or not (node-problem-detector's metric).
# TYPE problem_gauge gauge
problem_gauge{reason="DockerHung",type="KernelDeadlock"} 0
`
	if err := testutil.GatherAndCompare(r.Registry, strings.NewReader(exp), "problem_counter", "problem_gauge"); err != nil {
		t.Fatalf("before any run: %v", err)
	}
	r.Report(check.Result{Check: "kernel-log", Status: check.StatusWarning, Start: time.Now(), Findings: []check.Finding{
		{Severity: check.SeverityWarning, Reason: "OOMKilling", Message: "killed"},
	}})
	// A new rule file on reload: its reason starts at 0, counted ones keep their value.
	kl2 := &check.Definition{Name: "kernel-log", Conditions: []string{"KernelDeadlock"},
		Check: rulesCheck{append(rules.rules, check.RuleReason{Reason: "Ext4Error"})}}
	r.Reconfigure([]*check.Definition{kl2})
	exp = `
# HELP problem_counter Number of times a specific type of problem have occurred (node-problem-detector's metric).
# TYPE problem_counter counter
problem_counter{reason="DockerHung"} 0
problem_counter{reason="Ext4Error"} 0
problem_counter{reason="OOMKilling"} 1
problem_counter{reason="TaskHung"} 0
`
	if err := testutil.GatherAndCompare(r.Registry, strings.NewReader(exp), "problem_counter"); err != nil {
		t.Fatalf("after a run and a reload: %v", err)
	}
}
