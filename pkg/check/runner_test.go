package check

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"
)

type recorder struct {
	mu  sync.Mutex
	got []Result
	ch  chan Result
}

func newRecorder() *recorder { return &recorder{ch: make(chan Result, 100)} }

func (r *recorder) Report(res Result) {
	r.mu.Lock()
	r.got = append(r.got, res)
	r.mu.Unlock()
	r.ch <- res
}

func (r *recorder) next(t *testing.T) Result {
	t.Helper()
	select {
	case res := <-r.ch:
		return res
	case <-time.After(5 * time.Second):
		t.Fatal("no result reported within 5s")
		return Result{}
	}
}

func def(name string, timeout time.Duration, f Func) *Definition {
	return &Definition{Name: name, Area: "test", Interval: time.Minute, Timeout: timeout, Check: f}
}

func TestRunOnceStatuses(t *testing.T) {
	defs := []*Definition{
		def("ok", time.Second, func(context.Context) ([]Finding, error) {
			return []Finding{{Severity: SeverityOK, Reason: "Fine"}}, nil
		}),
		def("warn", time.Second, func(context.Context) ([]Finding, error) {
			return []Finding{{Severity: SeverityOK}, {Severity: SeverityWarning, Reason: "Meh"}}, nil
		}),
		def("problem", time.Second, func(context.Context) ([]Finding, error) {
			return []Finding{{Severity: SeverityWarning}, {Severity: SeverityProblem, Reason: "Broken"}}, nil
		}),
		def("error", time.Second, func(context.Context) ([]Finding, error) {
			return nil, errors.New("permission denied")
		}),
		def("na", time.Second, func(context.Context) ([]Finding, error) {
			return nil, NotApplicable("no %s here", "bridge")
		}),
		def("panics", time.Second, func(context.Context) ([]Finding, error) {
			panic("a bug in a check")
		}),
		def("empty", time.Second, func(context.Context) ([]Finding, error) { return nil, nil }),
	}
	rec := newRecorder()
	results := NewRunner(defs, nil, nil, rec).RunOnce(context.Background())
	want := []Status{StatusOK, StatusWarning, StatusProblem, StatusError, StatusNotApplicable, StatusError, StatusOK}
	if len(results) != len(want) {
		t.Fatalf("got %d results, want %d", len(results), len(want))
	}
	for i, res := range results {
		if res.Check != defs[i].Name {
			t.Errorf("result %d is for %q, want %q (definition order)", i, res.Check, defs[i].Name)
		}
		if res.Status != want[i] {
			t.Errorf("%s: status %s, want %s (err %v)", res.Check, res.Status, want[i], res.Err)
		}
		for _, f := range res.Findings {
			if f.Check != res.Check {
				t.Errorf("%s: finding check %q not filled in", res.Check, f.Check)
			}
		}
	}
	if results[4].NotApplicable != "no bridge here" {
		t.Errorf("not-applicable reason = %q", results[4].NotApplicable)
	}
	if !strings.Contains(results[5].Err.Error(), "panicked") {
		t.Errorf("panic not turned into an error: %v", results[5].Err)
	}
	if len(rec.got) != len(defs) {
		t.Errorf("reporter got %d results, want %d", len(rec.got), len(defs))
	}
}

func TestHungCheckDoesNotBlockOthers(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	hung := def("hung", 50*time.Millisecond, func(context.Context) ([]Finding, error) {
		<-release // ignores ctx on purpose
		return nil, nil
	})
	fast := def("fast", time.Second, func(context.Context) ([]Finding, error) { return nil, nil })
	r := NewRunner([]*Definition{hung, fast}, nil, nil)

	start := time.Now()
	res := r.RunOnce(context.Background())
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("RunOnce took %s; a hung check held it up", d)
	}
	if res[0].Status != StatusError || !errors.Is(res[0].Err, ErrTimeout) {
		t.Fatalf("hung check: status %s err %v, want a timeout error", res[0].Status, res[0].Err)
	}
	if res[1].Status != StatusOK {
		t.Fatalf("fast check: %s", res[1].Status)
	}
	// The abandoned run is still going: the next run is skipped, not stacked.
	res = r.RunOnce(context.Background())
	if !errors.Is(res[0].Err, ErrStillRunning) {
		t.Fatalf("second run of hung check: err %v, want ErrStillRunning", res[0].Err)
	}
}

func TestTimeoutHonouredByContext(t *testing.T) {
	d := def("slow", 20*time.Millisecond, func(ctx context.Context) ([]Finding, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	res := NewRunner([]*Definition{d}, nil, nil).RunOnce(context.Background())[0]
	if !errors.Is(res.Err, ErrTimeout) || !strings.Contains(res.Err.Error(), "20ms") {
		t.Fatalf("err = %v, want a timeout naming 20ms", res.Err)
	}
}

func TestRunOnInterval(t *testing.T) {
	clk := testingclock.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	var runs atomic.Int32
	d := def("tick", time.Second, func(context.Context) ([]Finding, error) {
		runs.Add(1)
		return nil, nil
	})
	d.Interval = 10 * time.Second
	rec := newRecorder()
	r := NewRunner([]*Definition{d}, clk, nil, rec)
	if err := r.Ready(); err == nil {
		t.Fatal("ready before any run")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = r.Run(ctx); close(done) }()

	rec.next(t) // immediate first run
	if err := r.Ready(); err != nil {
		t.Fatalf("not ready after first run: %v", err)
	}
	for i := 2; i <= 4; i++ {
		waitForTicker(t, clk)
		clk.Step(10 * time.Second)
		rec.next(t)
		if got := runs.Load(); got != int32(i) {
			t.Fatalf("after %d intervals: %d runs", i-1, got)
		}
	}
	if err := r.Healthy(); err != nil {
		t.Fatalf("healthy agent reported unhealthy: %v", err)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func TestHealthyDetectsStalledCheck(t *testing.T) {
	clk := testingclock.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	d := def("x", time.Second, func(context.Context) ([]Finding, error) { return nil, nil })
	r := NewRunner([]*Definition{d}, clk, nil)
	if err := r.Healthy(); err == nil {
		t.Fatal("healthy before start")
	}
	r.RunOnce(context.Background())
	if err := r.Healthy(); err != nil {
		t.Fatalf("unhealthy right after a run: %v", err)
	}
	clk.Step(2*d.Interval + d.Timeout + hungGrace + time.Second)
	if err := r.Healthy(); err == nil || !strings.Contains(err.Error(), "has not completed") {
		t.Fatalf("stalled check not detected: %v", err)
	}
}

func TestHealthyDetectsHungCheck(t *testing.T) {
	clk := testingclock.NewFakeClock(time.Now())
	release := make(chan struct{})
	defer close(release)
	started := make(chan struct{})
	d := def("hung", time.Second, func(context.Context) ([]Finding, error) {
		close(started)
		<-release
		return nil, nil
	})
	d.Timeout = 10 * time.Millisecond
	r := NewRunner([]*Definition{d}, clk, nil)
	r.RunOnce(context.Background())
	<-started
	clk.Step(d.Timeout + hungGrace + time.Second)
	if err := r.Healthy(); err == nil || !strings.Contains(err.Error(), "hung") {
		t.Fatalf("hung check not detected: %v", err)
	}
}

func TestStarterStartedByRun(t *testing.T) {
	s := &startCheck{}
	d := &Definition{Name: "bg", Interval: time.Minute, Timeout: time.Second, Check: s}
	ctx, cancel := context.WithCancel(context.Background())
	rec := newRecorder()
	go func() { _ = NewRunner([]*Definition{d}, nil, nil, rec).Run(ctx) }()
	rec.next(t)
	cancel()
	if !s.started.Load() {
		t.Fatal("Start was not called before the first run")
	}
	s2 := &startCheck{fail: true}
	d2 := &Definition{Name: "bad", Interval: time.Minute, Timeout: time.Second, Check: s2}
	if err := NewRunner([]*Definition{d2}, nil, nil).Run(context.Background()); err == nil || !strings.Contains(err.Error(), "bad") {
		t.Fatalf("start failure not returned: %v", err)
	}
}

type startCheck struct {
	started atomic.Bool
	fail    bool
}

func (s *startCheck) Start(context.Context) error {
	if s.fail {
		return errors.New("no such file")
	}
	s.started.Store(true)
	return nil
}

func (s *startCheck) Run(context.Context) ([]Finding, error) { return nil, nil }

func waitForTicker(t *testing.T, clk *testingclock.FakeClock) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !clk.HasWaiters() {
		if time.Now().After(deadline) {
			t.Fatal("runner never waited on its ticker")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestSelect(t *testing.T) {
	defs := []*Definition{{Name: "a"}, {Name: "b"}, {Name: "c"}}
	names := func(ds []*Definition) string {
		var s []string
		for _, d := range ds {
			s = append(s, d.Name)
		}
		return strings.Join(s, ",")
	}
	cases := []struct {
		only, skip []string
		disabled   map[string]bool
		want       string
		wantErr    string
	}{
		{want: "a,b,c"},
		{only: []string{"b"}, want: "b"},
		{skip: []string{"a", "c"}, want: "b"},
		{disabled: map[string]bool{"b": true}, want: "a,c"},
		{only: []string{"b"}, disabled: map[string]bool{"b": true}, want: "b"},
		{only: []string{"nope"}, wantErr: `unknown check "nope"; known checks: a, b, c`},
		{skip: []string{"zz"}, wantErr: `unknown check "zz"`},
	}
	for _, c := range cases {
		got, err := Select(defs, c.only, c.skip, c.disabled)
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("only=%v skip=%v: err %v, want %q", c.only, c.skip, err, c.wantErr)
			}
			continue
		}
		if err != nil || names(got) != c.want {
			t.Errorf("only=%v skip=%v disabled=%v: got %q %v, want %q", c.only, c.skip, c.disabled, names(got), err, c.want)
		}
	}
}

func TestSeverityText(t *testing.T) {
	for _, s := range []Severity{SeverityOK, SeverityWarning, SeverityProblem} {
		b, _ := s.MarshalText()
		var back Severity
		if err := back.UnmarshalText(b); err != nil || back != s {
			t.Errorf("%v: round trip gave %v, %v", s, back, err)
		}
	}
	var s Severity
	if err := s.UnmarshalText([]byte("fatal")); err == nil {
		t.Error("unknown severity accepted")
	}
}

type listerCheck struct{ Func }

func (listerCheck) ConditionTypes() []string { return []string{"B", "C"} }

func TestDefinitionConditionTypes(t *testing.T) {
	d := &Definition{Conditions: []string{"A", "B"}, Check: listerCheck{}}
	if got := strings.Join(d.ConditionTypes(), ","); got != "A,B,C" {
		t.Fatalf("got %s, want A,B,C", got)
	}
	plain := &Definition{Conditions: []string{"A"}, Check: Func(nil)}
	if got := strings.Join(plain.ConditionTypes(), ","); got != "A" {
		t.Fatalf("got %s", got)
	}
}

// A swap stops removed checks, starts new ones at once and leaves the
// unchanged ones on their schedule; a replaced check waits for the run of
// the one it replaces.
func TestRunnerSwap(t *testing.T) {
	var runsA, runsB atomic.Int32
	release := make(chan struct{})
	var overlap atomic.Bool
	var inC atomic.Int32
	mk := func(name string, f Func) *Definition {
		return &Definition{Name: name, Interval: time.Hour, Timeout: time.Minute, Check: f}
	}
	a := mk("a", func(context.Context) ([]Finding, error) { runsA.Add(1); return nil, nil })
	b := mk("b", func(context.Context) ([]Finding, error) { runsB.Add(1); return nil, nil })
	// c's first run ignores its context, as a hung check may.
	c := mk("c", func(context.Context) ([]Finding, error) {
		if inC.Add(1) > 1 {
			overlap.Store(true)
		}
		defer inC.Add(-1)
		<-release
		return nil, nil
	})
	rec := newRecorder()
	r := NewRunner([]*Definition{a, b, c}, nil, nil, rec)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	rec.next(t)
	rec.next(t) // a and b
	c2 := mk("c", func(context.Context) ([]Finding, error) {
		if inC.Add(1) > 1 {
			overlap.Store(true)
		}
		defer inC.Add(-1)
		return nil, nil
	})
	d := mk("d", func(context.Context) ([]Finding, error) { return nil, nil })
	if err := r.Swap(ctx, []*Definition{a, c2, d}); err != nil {
		t.Fatal(err)
	}
	got := map[string]Result{}
	for range 2 {
		res := rec.next(t)
		got[res.Check] = res
	}
	if got["d"].Status != StatusOK {
		t.Errorf("new check d did not run: %+v", got)
	}
	if !errors.Is(got["c"].Err, ErrStillRunning) {
		t.Errorf("replaced c ran while the old c was still running: %+v", got["c"])
	}
	close(release)
	if overlap.Load() {
		t.Error("two runs of c at once")
	}
	if runsA.Load() != 1 || runsB.Load() != 1 {
		t.Errorf("a ran %d times, b %d; want 1 each", runsA.Load(), runsB.Load())
	}
	var names []string
	for _, d := range r.definitions() {
		names = append(names, d.Name)
	}
	if strings.Join(names, ",") != "a,c,d" {
		t.Errorf("definitions %v", names)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
