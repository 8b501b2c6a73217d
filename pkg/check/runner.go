package check

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// Reporter consumes results. Report must not block: a reporter that talks to
// a slow system queues internally.
type Reporter interface {
	Report(Result)
}

// Errors the runner puts in results of runs it cut short or skipped.
var (
	ErrTimeout      = errors.New("timed out")
	ErrStillRunning = errors.New("previous run still in progress")
)

// Runner executes checks, each on its own interval and with its own timeout,
// so that one slow or hung check never delays the others.
type Runner struct {
	defs      []*Definition
	clock     clock.WithTicker
	reporters []Reporter
	log       *slog.Logger

	swaps chan swap

	mu      sync.Mutex
	started time.Time
	state   map[string]*runState
}

type swap struct {
	defs []*Definition
	done chan error
}

type runState struct {
	inflight     bool
	runningSince time.Time
	lastFinish   time.Time
	last         Result
	hasResult    bool
}

// NewRunner builds a runner for defs; clk and log may be nil.
func NewRunner(defs []*Definition, clk clock.WithTicker, log *slog.Logger, reporters ...Reporter) *Runner {
	if clk == nil {
		clk = clock.RealClock{}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	st := make(map[string]*runState, len(defs))
	for _, d := range defs {
		st[d.Name] = &runState{}
	}
	return &Runner{defs: defs, clock: clk, reporters: reporters, log: log, state: st, swaps: make(chan swap)}
}

// RunOnce runs every check once, concurrently, and returns the results in
// definition order. Results are also handed to the reporters.
func (r *Runner) RunOnce(ctx context.Context) []Result {
	r.markStarted()
	defs := r.definitions()
	out := make([]Result, len(defs))
	var wg sync.WaitGroup
	for i, d := range defs {
		wg.Go(func() { out[i] = r.runAndReport(ctx, d) })
	}
	wg.Wait()
	return out
}

func (r *Runner) definitions() []*Definition {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.defs
}

// loopHandle is one check's loop; it waits for gate to open before its
// first run.
type loopHandle struct {
	cancel context.CancelFunc
	gate   chan struct{}
	done   chan struct{}
}

// Run starts background checks, then runs each check at once and then on
// its interval until ctx is done. Swap replaces checks while it runs.
func (r *Runner) Run(ctx context.Context) error {
	running := map[*Definition]*loopHandle{}
	defer func() {
		for _, h := range running {
			h.cancel()
			<-h.done
		}
	}()
	if err := r.start(ctx, r.definitions(), running, running); err != nil {
		return err
	}
	r.markStarted()
	for _, h := range running {
		close(h.gate)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case sw := <-r.swaps:
			sw.done <- r.swap(ctx, sw.defs, running)
		}
	}
}

// start starts the background checks in defs that are not in running and
// their loops, gated, into fresh. When one fails to start, none is left.
func (r *Runner) start(ctx context.Context, defs []*Definition, running, fresh map[*Definition]*loopHandle) error {
	var started []*loopHandle
	for _, d := range defs {
		if running[d] != nil {
			continue
		}
		lctx, cancel := context.WithCancel(ctx)
		h := &loopHandle{cancel: cancel, gate: make(chan struct{}), done: make(chan struct{})}
		if s, ok := d.Check.(Starter); ok {
			if err := s.Start(lctx); err != nil {
				cancel()
				for _, h := range started {
					h.cancel()
					<-h.done
				}
				return fmt.Errorf("start check %s: %w", d.Name, err)
			}
		}
		started = append(started, h)
		go func() {
			defer close(h.done)
			r.loop(lctx, d, h.gate)
		}()
		fresh[d] = h
	}
	return nil
}

// swap stops the loops of checks not in defs and starts those new in defs.
// A check's run state is kept by name, so a replaced check never runs
// while a run of the one it replaces is still in flight.
func (r *Runner) swap(ctx context.Context, defs []*Definition, running map[*Definition]*loopHandle) error {
	keep := map[*Definition]bool{}
	for _, d := range defs {
		keep[d] = true
	}
	// The new background checks start before the old stop: a failure
	// leaves the old ones running.
	fresh := map[*Definition]*loopHandle{}
	if err := r.start(ctx, defs, running, fresh); err != nil {
		return err
	}
	for d, h := range running {
		if !keep[d] {
			h.cancel()
			<-h.done
			delete(running, d)
		}
	}
	now := r.clock.Now()
	r.mu.Lock()
	old := map[string]bool{}
	for _, d := range r.defs {
		old[d.Name] = true
	}
	for _, d := range defs {
		st := r.state[d.Name]
		if st == nil {
			st = &runState{}
			r.state[d.Name] = st
		}
		if !old[d.Name] {
			// Back after being removed: its old result says nothing now.
			st.hasResult, st.lastFinish = false, now
		}
	}
	r.defs = defs
	r.mu.Unlock()
	for d, h := range fresh {
		running[d] = h
		close(h.gate)
	}
	return nil
}

// Swap replaces the checks that run: loops of checks no longer in defs
// are stopped, checks new in defs (by pointer) start at once; the others
// keep their schedule. It returns when the swap is done, or with the error
// of a background check that would not start (then nothing changed).
func (r *Runner) Swap(ctx context.Context, defs []*Definition) error {
	sw := swap{defs: defs, done: make(chan error, 1)}
	select {
	case r.swaps <- sw:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-sw.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *Runner) markStarted() {
	r.mu.Lock()
	if r.started.IsZero() {
		r.started = r.clock.Now()
	}
	r.mu.Unlock()
}

func (r *Runner) loop(ctx context.Context, d *Definition, gate <-chan struct{}) {
	select {
	case <-gate:
	case <-ctx.Done():
		return
	}
	r.runAndReport(ctx, d)
	t := r.clock.NewTicker(d.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
			r.runAndReport(ctx, d)
		}
	}
}

func (r *Runner) runAndReport(ctx context.Context, d *Definition) Result {
	res := r.execute(ctx, d)
	if ctx.Err() != nil && res.Status == StatusError {
		// Shutting down: a cut-short run says nothing about the node.
		return res
	}
	switch res.Status {
	case StatusError:
		r.log.Warn("check could not run", "check", d.Name, "err", res.Err)
	default:
		r.log.Debug("check ran", "check", d.Name, "status", res.Status, "duration", res.Duration)
	}
	for _, rep := range r.reporters {
		rep.Report(res)
	}
	return res
}

type outcome struct {
	findings []Finding
	err      error
}

// execute runs one check with its timeout. A run that outlives its timeout is
// abandoned, and later runs of the same check are skipped until it returns.
func (r *Runner) execute(ctx context.Context, d *Definition) Result {
	start := r.clock.Now()
	r.mu.Lock()
	st := r.state[d.Name]
	if st.inflight {
		since := start.Sub(st.runningSince)
		r.mu.Unlock()
		return NewResult(d, start, 0, nil, fmt.Errorf("%w for %s", ErrStillRunning, since.Round(time.Millisecond)))
	}
	st.inflight, st.runningSince = true, start
	r.mu.Unlock()

	cctx, cancel := context.WithTimeout(ctx, d.Timeout)
	defer cancel()
	ch := make(chan outcome, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				ch <- outcome{err: fmt.Errorf("check panicked: %v", p)}
			}
			r.mu.Lock()
			st.inflight = false
			r.mu.Unlock()
		}()
		f, err := d.Check.Run(cctx)
		ch <- outcome{f, err}
	}()

	var o outcome
	select {
	case o = <-ch:
	case <-cctx.Done():
		o.err = context.Cause(cctx)
	}
	if o.err != nil && errors.Is(o.err, context.DeadlineExceeded) && ctx.Err() == nil {
		o.err = fmt.Errorf("%w after %s: %w", ErrTimeout, d.Timeout, o.err)
	}
	res := NewResult(d, start, r.clock.Since(start), o.findings, o.err)

	r.mu.Lock()
	st.lastFinish, st.last, st.hasResult = r.clock.Now(), res, true
	r.mu.Unlock()
	return res
}

// Results returns the latest result of every check that has run, in
// definition order.
func (r *Runner) Results() []Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Result, 0, len(r.defs))
	for _, d := range r.defs {
		if st := r.state[d.Name]; st.hasResult {
			out = append(out, st.last)
		}
	}
	return out
}

// hungGrace is how long past its timeout a run may go before the agent counts
// itself unhealthy: the goroutine is leaked, and a restart is the cure.
const hungGrace = 30 * time.Second

// Healthy reports an error when a check is hung or has stopped completing.
func (r *Runner) Healthy() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started.IsZero() {
		return errors.New("checks not started")
	}
	now := r.clock.Now()
	var errs []error
	for _, d := range r.defs {
		st := r.state[d.Name]
		if st.inflight && now.Sub(st.runningSince) > d.Timeout+hungGrace {
			errs = append(errs, fmt.Errorf("check %s hung: running for %s, timeout %s", d.Name, now.Sub(st.runningSince).Round(time.Second), d.Timeout))
			continue
		}
		since := st.lastFinish
		if since.IsZero() {
			since = r.started
		}
		if limit := 2*d.Interval + d.Timeout + hungGrace; now.Sub(since) > limit {
			errs = append(errs, fmt.Errorf("check %s has not completed for %s", d.Name, now.Sub(since).Round(time.Second)))
		}
	}
	return errors.Join(errs...)
}

// Ready reports an error until every check has completed at least once.
func (r *Runner) Ready() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var waiting []string
	for _, d := range r.defs {
		if !r.state[d.Name].hasResult {
			waiting = append(waiting, d.Name)
		}
	}
	if len(waiting) > 0 {
		return fmt.Errorf("waiting for the first run of %v", waiting)
	}
	return nil
}
