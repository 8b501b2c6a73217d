package plugin

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/node-doctor/node-doctor/pkg/check"
)

func testMonitor(messageChange bool) *Monitor {
	return &Monitor{
		File: "m.json", Source: "m", Concurrency: 1, MaxOutputLength: 80, MessageChange: messageChange,
		Conditions: []Condition{{Type: "NTPProblem", Reason: "NTPIsUp", Message: "ntp service is up"}},
		Rules: []*Rule{
			{Index: 0, Reason: "NTPIsDown"},
			{Index: 1, Permanent: true, Condition: "NTPProblem", Reason: "NTPIsDown"},
			{Index: 2, Permanent: true, Condition: "NTPProblem", Reason: "NTPStepped"},
		},
	}
}

type condView struct {
	sev     check.Severity
	unknown bool
	reason  string
	message string
}

func condOf(t *testing.T, fs []check.Finding, typ string) condView {
	t.Helper()
	for _, f := range fs {
		if f.Condition == typ {
			return condView{f.Severity, f.Unknown, f.Reason, f.Message}
		}
	}
	t.Fatalf("no %s finding in %+v", typ, fs)
	return condView{}
}

// TestConditionLikeNPD walks a condition through NPD's scenarios.
func TestConditionLikeNPD(t *testing.T) {
	now := time.Date(2026, 12, 7, 2, 0, 0, 0, time.UTC)
	for _, mc := range []bool{false, true} {
		t.Run(fmt.Sprintf("message change %v", mc), func(t *testing.T) {
			r := newRunner(testMonitor(mc), clocktesting.NewFakeClock(now))
			down, stepped := r.mon.Rules[1], r.mon.Rules[2]
			steps := []struct {
				rule *Rule
				res  Result
				want condView
			}{
				// Before any result: the file's healthy state.
				{nil, Result{}, condView{check.SeverityOK, false, "NTPIsUp", "ntp service is up"}},
				{down, Result{Status: OK, Message: "running"}, condView{check.SeverityOK, false, "NTPIsUp", "ntp service is up"}},
				{down, Result{Status: NonOK, Message: "not running"}, condView{check.SeverityProblem, false, "NTPIsDown", "not running"}},
				// Still True: the message moves only with message change on.
				{down, Result{Status: NonOK, Message: "still not running"}, condView{check.SeverityProblem, false, "NTPIsDown", map[bool]string{false: "not running", true: "still not running"}[mc]}},
				// Another rule's reason always moves it.
				{stepped, Result{Status: NonOK, Message: "clock stepped"}, condView{check.SeverityProblem, false, "NTPStepped", "clock stepped"}},
				// True to Unknown: the healthy reason, the script's message.
				{down, Result{Status: Unknown, Message: "Timeout when running plugin"}, condView{check.SeverityWarning, true, "NTPIsUp", "Timeout when running plugin"}},
				{down, Result{Status: Unknown, Message: "again"}, condView{check.SeverityWarning, true, "NTPIsUp", "Timeout when running plugin"}},
				// Unknown to False: the healthy reason and message.
				{down, Result{Status: OK, Message: "running"}, condView{check.SeverityOK, false, "NTPIsUp", "ntp service is up"}},
				{down, Result{Status: NonOK, Message: "down"}, condView{check.SeverityProblem, false, "NTPIsDown", "down"}},
				// Last result wins, whichever rule: as in NPD.
				{stepped, Result{Status: OK}, condView{check.SeverityOK, false, "NTPIsUp", "ntp service is up"}},
			}
			for i, s := range steps {
				if s.rule != nil {
					r.apply(s.rule, s.res, now.Add(time.Duration(i)*time.Second))
				}
				if got := condOf(t, r.findings(), "NTPProblem"); got != s.want {
					t.Errorf("step %d (%s %s %q): %+v, want %+v", i, s.rule, s.res.Status, s.res.Message, got, s.want)
				}
			}
		})
	}
}

// TestTemporaryRules: a temporary rule reports each answer that is not OK
// once (NPD's event: exit 1 and unknown alike), none for OK.
func TestTemporaryRules(t *testing.T) {
	now := time.Date(2026, 12, 7, 2, 0, 0, 0, time.UTC)
	r := newRunner(testMonitor(false), clocktesting.NewFakeClock(now))
	tmp := r.mon.Rules[0]
	r.apply(tmp, Result{Status: OK, Message: "fine"}, now)
	r.apply(tmp, Result{Status: NonOK, Message: "ntp down", ExitCode: 1}, now)
	r.apply(tmp, Result{Status: Unknown, Message: "no systemctl", ExitCode: 2}, now.Add(time.Second))
	var got []string
	for _, f := range r.findings() {
		if f.Condition == "" {
			got = append(got, fmt.Sprintf("%s %s %s %s", f.Severity, f.Reason, f.Message, f.Details["exit_code"]))
		}
	}
	if want := []string{"warning NTPIsDown ntp down 1", "warning NTPIsDown no systemctl 2"}; !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	for _, f := range r.findings() {
		if f.Condition == "" {
			t.Errorf("reported twice: %+v", f)
		}
	}
	for range DefaultMaxPending + 5 {
		r.apply(tmp, Result{Status: NonOK, Message: "x"}, now)
	}
	fs := r.findings()
	if len(fs) != 1+DefaultMaxPending+1 || fs[len(fs)-1].Reason != "PluginFindingsDropped" || !strings.Contains(fs[len(fs)-1].Message, "5 more") {
		t.Errorf("%d findings, last %+v; want %d kept and 5 dropped", len(fs), fs[len(fs)-1], DefaultMaxPending)
	}
}

// TestConcurrency: four rules of one second each, at most two at once.
func TestConcurrency(t *testing.T) {
	dir := t.TempDir()
	body := fmt.Sprintf(`d=%s; touch $d/run.$$; ls $d | grep -c '^run\.' >> $d/seen; sleep 1; rm $d/run.$$`, dir)
	path := script(t, "p.sh", body)
	m := &Monitor{File: "m.json", Source: "m", Concurrency: 2, MaxOutputLength: 80}
	for i := range 4 {
		m.Rules = append(m.Rules, &Rule{Index: i, Reason: "R", Path: path, Timeout: 30 * time.Second})
	}
	start := time.Now()
	newRunner(m, clock.RealClock{}).runBatch(context.Background(), m.Rules)
	elapsed := time.Since(start)
	b, err := os.ReadFile(filepath.Join(dir, "seen"))
	if err != nil {
		t.Fatal(err)
	}
	seen := strings.Fields(string(b))
	if len(seen) != 4 {
		t.Fatalf("%d scripts ran, want 4", len(seen))
	}
	for _, s := range seen {
		if n, _ := strconv.Atoi(s); n < 1 || n > 2 {
			t.Errorf("%s scripts running at once, want at most 2 (saw %v)", s, seen)
		}
	}
	if elapsed < 2*time.Second {
		t.Errorf("4 one-second scripts two at a time took %s, want at least 2s", elapsed)
	}
}

// writeMonitor writes a monitor file whose one permanent rule runs a script
// that says problem while flag exists.
func writeMonitor(t *testing.T, extra string) (file, flag string) {
	t.Helper()
	dir := t.TempDir()
	flag = filepath.Join(dir, "broken")
	path := script(t, "probe.sh", fmt.Sprintf(`if [ -e %s ]; then echo "probe: $(cat %s)"; exit 1; fi; echo probe fine; exit 0`, flag, flag))
	file = filepath.Join(dir, "m.json")
	body := fmt.Sprintf(`{"plugin": "custom",
  "pluginConfig": {"invoke_interval": "1s", "timeout": "5s", "max_output_length": 80, "concurrency": 1 %s},
  "source": "probe-monitor", "metricsReporting": true,
  "conditions": [{"type": "ProbeProblem", "reason": "ProbeIsFine", "message": "the probe is fine"}],
  "rules": [
    {"type": "permanent", "condition": "ProbeProblem", "reason": "ProbeFailed", "path": %q},
    {"type": "temporary", "reason": "ProbeEvent", "path": %q, "timeout": "2s"}
  ]}`, extra, path, path)
	if err := os.WriteFile(file, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return file, flag
}

func newChecker(t *testing.T, files ...string) *Checker {
	t.Helper()
	def := Plugins(nil)
	c := def.Check.(*Checker)
	c.settings.Monitors = files
	if err := c.settings.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := def.ConditionTypes(); !slices.Equal(got, []string{"ProbeProblem"}) {
		t.Errorf("condition types %v", got)
	}
	return c
}

func TestCheckOneShot(t *testing.T) {
	file, flag := writeMonitor(t, "")
	c := newChecker(t, file)
	if err := os.WriteFile(flag, []byte("disk on fire"), 0o644); err != nil {
		t.Fatal(err)
	}
	fs, err := c.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got := condOf(t, fs, "ProbeProblem"); got != (condView{check.SeverityProblem, false, "ProbeFailed", "probe: disk on fire"}) {
		t.Errorf("condition %+v", got)
	}
	if len(fs) != 2 || fs[1].Reason != "ProbeEvent" || fs[1].Severity != check.SeverityWarning || fs[1].Details["source"] != "probe-monitor" {
		t.Errorf("findings %+v, want the condition and one ProbeEvent", fs)
	}
	os.Remove(flag)
	if fs, err = c.Run(context.Background()); err != nil || len(fs) != 1 || fs[0].Severity != check.SeverityOK || fs[0].Message != "the probe is fine" {
		t.Errorf("fixed: %v %+v", err, fs)
	}

	_, err = Plugins(nil).Check.Run(context.Background())
	if _, ok := check.IsNotApplicable(err); !ok {
		t.Errorf("no monitors: %v, want not applicable", err)
	}
}

// TestCheckStarted: the agent's way, with the condition following the
// script; without skip_initial_status the healthy state is reported at
// once, with it the first run waits for the scripts.
func TestCheckStarted(t *testing.T) {
	for _, skip := range []bool{false, true} {
		t.Run(fmt.Sprintf("skip_initial_status %v", skip), func(t *testing.T) {
			file, flag := writeMonitor(t, fmt.Sprintf(`, "skip_initial_status": %v`, skip))
			if err := os.WriteFile(flag, []byte("broken"), 0o644); err != nil {
				t.Fatal(err)
			}
			c := newChecker(t, file)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if err := c.Start(ctx); err != nil {
				t.Fatal(err)
			}
			fs, err := c.Run(ctx)
			if err != nil {
				t.Fatal(err)
			}
			first := condOf(t, fs, "ProbeProblem")
			if skip && first.sev != check.SeverityProblem {
				t.Errorf("skip_initial_status: first run %+v, want the script's problem", first)
			}
			wait := func(want check.Severity) {
				t.Helper()
				deadline := time.Now().Add(15 * time.Second)
				for {
					fs, err := c.Run(ctx)
					if err != nil {
						t.Fatal(err)
					}
					if got := condOf(t, fs, "ProbeProblem"); got.sev == want {
						return
					}
					if time.Now().After(deadline) {
						t.Fatalf("condition still %+v, want %s", condOf(t, fs, "ProbeProblem"), want)
					}
					time.Sleep(100 * time.Millisecond)
				}
			}
			wait(check.SeverityProblem)
			os.Remove(flag)
			wait(check.SeverityOK)
		})
	}
}

// TestCheckSkipInitialStatusWaits: before the scripts answer, the first run
// reports the healthy state unless skip_initial_status is set.
func TestCheckSkipInitialStatusWaits(t *testing.T) {
	for _, skip := range []bool{false, true} {
		dir := t.TempDir()
		path := script(t, "slow.sh", "sleep 1; echo slow problem; exit 1")
		file := filepath.Join(dir, "m.json")
		body := fmt.Sprintf(`{"plugin":"custom","pluginConfig":{"invoke_interval":"1m","timeout":"5s","skip_initial_status":%v},"source":"slow",
			"conditions":[{"type":"ProbeProblem","reason":"ProbeIsFine","message":"fine"}],
			"rules":[{"type":"permanent","condition":"ProbeProblem","reason":"Slow","path":%q}]}`, skip, path)
		if err := os.WriteFile(file, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		c := newChecker(t, file)
		ctx, cancel := context.WithCancel(context.Background())
		if err := c.Start(ctx); err != nil {
			t.Fatal(err)
		}
		fs, err := c.Run(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		want := check.SeverityOK
		if skip {
			want = check.SeverityProblem
		}
		if got := condOf(t, fs, "ProbeProblem"); got.sev != want {
			t.Errorf("skip_initial_status %v: first run %+v, want %s", skip, got, want)
		}
	}
}

func TestMetrics(t *testing.T) {
	file, flag := writeMonitor(t, "")
	if err := os.WriteFile(flag, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := newChecker(t, file)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	problemRuns := func() float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				ls := map[string]string{}
				for _, l := range m.GetLabel() {
					ls[l.GetName()] = l.GetValue()
				}
				if mf.GetName() == "node_doctor_plugin_runs_total" && ls["source"] == "probe-monitor" && ls["status"] == "problem" {
					return m.GetCounter().GetValue()
				}
			}
		}
		return 0
	}
	deadline := time.Now().Add(10 * time.Second)
	for problemRuns() < 2 { // two rules, both saying problem
		if time.Now().After(deadline) {
			t.Fatal("no problem runs counted")
		}
		time.Sleep(50 * time.Millisecond)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 3 {
		t.Errorf("%d metric families, want 3", len(mfs))
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}
