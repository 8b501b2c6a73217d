package kube

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode"

	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"

	"github.com/node-doctor/node-doctor/pkg/check"
)

// Component is the event source and reporting controller.
const Component = "node-doctor"

// EventOptions configure the event recorder.
type EventOptions struct {
	Node string
	// QueueSize bounds events waiting to be written; one entry per distinct
	// event, repeats are merged into it. Default 1000.
	QueueSize int
	// QPS and Burst limit writes to the API server. Defaults 1 and 20.
	QPS   float64
	Burst int
	// IncludeLogs copies what workloads logged (Finding.LogExcerpt) into
	// Events, cut to 256 bytes; off by default.
	IncludeLogs bool
	Clock       clock.WithTicker
	Log         *slog.Logger
	// Metrics may be nil.
	Metrics *Metrics
}

// Events turns findings that appear into Kubernetes Events: on the Pod for
// pod findings, on the Node otherwise. Repeats of one problem raise the count
// of one Event object; writes are rate-limited and queued while the API
// server is away; anything not written is counted and logged.
type Events struct {
	api EventAPI
	o   EventOptions
	lim *rate.Limiter

	mu      sync.Mutex
	seen    map[string]map[string]time.Time // check -> finding key -> its time
	queue   map[string]*pending
	order   []string
	written map[string]int32 // event name -> count on the server
	wake    chan struct{}
}

type pending struct {
	ev    corev1.Event
	timed bool // the finding said when it happened
}

// NewEvents builds an event recorder; call Run to start writing.
func NewEvents(api EventAPI, o EventOptions) *Events {
	if o.QueueSize <= 0 {
		o.QueueSize = 1000
	}
	if o.QPS <= 0 {
		o.QPS = 1
	}
	if o.Burst <= 0 {
		o.Burst = 20
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &Events{
		api: api, o: o, lim: rate.NewLimiter(rate.Limit(o.QPS), o.Burst),
		seen: map[string]map[string]time.Time{}, queue: map[string]*pending{},
		written: map[string]int32{}, wake: make(chan struct{}, 1),
	}
}

// Report queues an event for each warning or problem finding that was not
// in the check's previous result, or that happened again since. It never
// blocks.
func (e *Events) Report(res check.Result) {
	if res.Status == check.StatusError || res.Status == check.StatusNotApplicable {
		return // says nothing about the findings seen before
	}
	now := e.o.Clock.Now()
	e.mu.Lock()
	prev := e.seen[res.Check]
	cur := map[string]time.Time{}
	for _, f := range res.Findings {
		if f.Severity == check.SeverityOK {
			continue
		}
		k := f.Reason + "\x00" + f.Object.String() + "\x00" + f.Message
		cur[k] = f.Time
		if last, ok := prev[k]; ok && !f.Time.After(last) {
			continue // the same problem, still there
		}
		e.enqueue(e.eventFor(res.Check, f, now), !f.Time.IsZero())
	}
	e.seen[res.Check] = cur
	e.mu.Unlock()
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// enqueue merges ev into a queued event of the same name, or appends it.
func (e *Events) enqueue(ev corev1.Event, timed bool) {
	if p, ok := e.queue[ev.Name]; ok {
		p.ev.Count += ev.Count
		p.ev.Message = ev.Message
		if ev.LastTimestamp.After(p.ev.LastTimestamp.Time) {
			p.ev.LastTimestamp = ev.LastTimestamp
		}
		return
	}
	if len(e.queue) >= e.o.QueueSize {
		e.drop("queue_full", ev)
		return
	}
	e.queue[ev.Name] = &pending{ev: ev, timed: timed}
	e.order = append(e.order, ev.Name)
	e.setQueued()
}

func (e *Events) drop(reason string, ev corev1.Event) {
	if e.o.Metrics != nil {
		e.o.Metrics.EventsDropped.WithLabelValues(reason).Inc()
	}
	e.o.Log.Warn("event not written", "why", reason, "object", ev.InvolvedObject.Kind+" "+ev.InvolvedObject.Namespace+"/"+ev.InvolvedObject.Name,
		"reason", ev.Reason, "count", ev.Count)
}

func (e *Events) setQueued() {
	if e.o.Metrics != nil {
		e.o.Metrics.EventsQueued.Set(float64(len(e.queue)))
	}
}

// eventFor builds the Event for a finding. Its name is derived from the
// object, check and reason, so repeats (and a restarted agent) find it.
func (e *Events) eventFor(checkName string, f check.Finding, now time.Time) corev1.Event {
	when := now
	if !f.Time.IsZero() {
		when = f.Time
	}
	ref := corev1.ObjectReference{Kind: "Node", Name: e.o.Node, UID: types.UID(e.o.Node)}
	ns := metav1.NamespaceDefault
	if f.Object.Kind == check.KindPod || f.Object.Kind == check.KindContainer {
		ref = corev1.ObjectReference{Kind: "Pod", Namespace: f.Object.Namespace, Name: f.Object.Name, UID: types.UID(f.Object.UID)}
		if f.Object.Container != "" {
			ref.FieldPath = "spec.containers{" + f.Object.Container + "}"
		}
		ns = f.Object.Namespace
	}
	msg := f.Message
	if e.o.IncludeLogs && f.LogExcerpt != "" {
		msg += "; " + sanitize(f.LogExcerpt, 256)
	}
	sum := sha256.Sum256([]byte(ref.Kind + "/" + ref.Namespace + "/" + ref.Name + "/" + ref.FieldPath + "/" + checkName + "/" + f.Reason))
	base := ref.Name
	if len(base) > 200 {
		base = base[:200]
	}
	return corev1.Event{
		ObjectMeta: metav1.ObjectMeta{
			Name: base + ".nd-" + hex.EncodeToString(sum[:8]), Namespace: ns,
			Annotations: map[string]string{"node-doctor.io/check": checkName},
		},
		InvolvedObject:      ref,
		Reason:              f.Reason,
		Message:             sanitize(msg, maxMessage),
		Type:                corev1.EventTypeWarning,
		Source:              corev1.EventSource{Component: Component, Host: e.o.Node},
		FirstTimestamp:      metav1.NewTime(when),
		LastTimestamp:       metav1.NewTime(when),
		Count:               1,
		ReportingController: Component,
		ReportingInstance:   Component + "-" + e.o.Node,
	}
}

// sanitize strips control characters and bounds the length, since events
// are read by more people, in more tools, than the node's logs.
func sanitize(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	if len(s) > n {
		s = s[:n-3] + "..."
	}
	return s
}

// Run writes queued events until ctx is done, oldest first, retrying with
// backoff while the API server is away.
func (e *Events) Run(ctx context.Context) error {
	var retry <-chan time.Time
	backoff := time.Second
	for {
		select {
		case <-ctx.Done():
			e.mu.Lock()
			if n := len(e.queue); n > 0 {
				e.o.Log.Warn("stopping with events not written", "count", n)
			}
			e.mu.Unlock()
			return nil
		case <-e.wake:
		case <-retry:
			retry = nil
		}
		for {
			p := e.next()
			if p == nil {
				break
			}
			if err := e.lim.Wait(ctx); err != nil {
				e.requeue(p)
				break
			}
			rctx, cancel := context.WithTimeout(ctx, requestTimeout)
			err := e.write(rctx, p)
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					e.requeue(p)
					break
				}
				if rejected(err) {
					e.mu.Lock()
					e.drop("rejected", p.ev)
					e.mu.Unlock()
					e.o.Log.Warn("event rejected by the API server", "err", err)
					continue
				}
				e.requeue(p)
				e.o.Log.Warn("write event; will retry", "retry_in", backoff, "err", err)
				retry = e.o.Clock.After(backoff)
				backoff = min(2*backoff, time.Minute)
				break
			}
			backoff = time.Second
		}
	}
}

func (e *Events) next() *pending {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.order) == 0 {
		return nil
	}
	name := e.order[0]
	e.order = e.order[1:]
	p := e.queue[name]
	delete(e.queue, name)
	e.setQueued()
	return p
}

// requeue puts an unwritten event back at the front, merged with anything
// queued for the same name since.
func (e *Events) requeue(p *pending) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if q, ok := e.queue[p.ev.Name]; ok {
		q.ev.Count += p.ev.Count
		q.ev.FirstTimestamp = p.ev.FirstTimestamp
		return
	}
	e.queue[p.ev.Name] = p
	e.order = append([]string{p.ev.Name}, e.order...)
	e.setQueued()
}

// write creates the event or raises the count of the existing one. An
// event already on the server with the same message (and, for timed
// findings, a time at least as late) is what a restarted agent sees again,
// and is not counted twice.
func (e *Events) write(ctx context.Context, p *pending) error {
	ev := p.ev
	e.mu.Lock()
	count, known := e.written[ev.Name]
	e.mu.Unlock()
	if !known {
		old, err := e.api.GetEvent(ctx, ev.Namespace, ev.Name)
		e.o.Metrics.request("get_event", err)
		switch {
		case apierrors.IsNotFound(err):
			err = e.api.CreateEvent(ctx, &ev)
			e.o.Metrics.request("create_event", err)
			if err == nil {
				e.emitted("created", ev.Name, ev.Count)
			}
			return err
		case err != nil:
			return err
		}
		if old.Message == ev.Message && (!p.timed || !ev.LastTimestamp.After(old.LastTimestamp.Time)) {
			e.mu.Lock()
			e.written[ev.Name] = old.Count
			e.mu.Unlock()
			return nil
		}
		count = old.Count
	}
	patch, err := json.Marshal(map[string]any{
		"count": count + ev.Count, "message": ev.Message, "lastTimestamp": ev.LastTimestamp,
	})
	if err != nil {
		return err
	}
	err = e.api.PatchEvent(ctx, ev.Namespace, ev.Name, patch)
	e.o.Metrics.request("patch_event", err)
	if apierrors.IsNotFound(err) { // expired (events have a TTL): start again
		ev.Count += count
		err = e.api.CreateEvent(ctx, &ev)
		e.o.Metrics.request("create_event", err)
		if err == nil {
			e.emitted("created", ev.Name, ev.Count)
		}
		return err
	}
	if err == nil {
		e.emitted("aggregated", ev.Name, count+ev.Count)
	}
	return err
}

func (e *Events) emitted(action, name string, count int32) {
	e.mu.Lock()
	e.written[name] = count
	e.mu.Unlock()
	if e.o.Metrics != nil {
		e.o.Metrics.EventsEmitted.WithLabelValues(action).Inc()
	}
}

// rejected errors will not succeed on retry.
func rejected(err error) bool {
	return apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) || apierrors.IsForbidden(err) ||
		(apierrors.IsNotFound(err)) || apierrors.IsAlreadyExists(err)
}
