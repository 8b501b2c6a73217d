package kube

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"

	"github.com/node-doctor/node-doctor/pkg/check"
)

// ConditionOptions configure the condition manager.
type ConditionOptions struct {
	Node string
	// All lists every check node-doctor has, enabled or not: the condition
	// types they may drive are the ones node-doctor owns, and owned types no
	// enabled check drives are removed from the node.
	All []*check.Definition
	// Enabled lists the checks that run.
	Enabled []*check.Definition
	// Heartbeat is how often unchanged conditions are rewritten.
	Heartbeat time.Duration
	Clock     clock.WithTicker
	Log       *slog.Logger
	Metrics   *Metrics
}

// requestTimeout bounds one API call, so a hung API server is retried
// rather than waited on for ever.
const requestTimeout = 30 * time.Second

// maxMessage bounds a condition message; several findings are joined.
const maxMessage = 1024

// Conditions keeps the node conditions node-doctor owns in step with the
// latest findings. It writes only its own types, with a strategic merge
// patch of the status subresource, so kubelet's conditions are never
// touched and no resourceVersion conflict can arise.
type Conditions struct {
	api       NodeAPI
	o         ConditionOptions
	owned     []string
	producers map[string][]string // enabled type -> checks that drive it

	mu      sync.Mutex
	latest  map[string]check.Result
	removed []string // types no check drives since a reconfigure
	wake    chan struct{}
}

// NewConditions builds a condition manager; call Run to start it.
func NewConditions(api NodeAPI, o ConditionOptions) *Conditions {
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	c := &Conditions{api: api, o: o, latest: map[string]check.Result{}, wake: make(chan struct{}, 1)}
	c.owned, c.producers = ownedTypes(o.All, o.Enabled)
	return c
}

func ownedTypes(all, enabled []*check.Definition) (owned []string, producers map[string][]string) {
	producers = map[string][]string{}
	for _, d := range all {
		for _, t := range d.ConditionTypes() {
			if !slices.Contains(owned, t) {
				owned = append(owned, t)
			}
		}
	}
	for _, d := range enabled {
		for _, t := range d.ConditionTypes() {
			producers[t] = append(producers[t], d.Name)
		}
	}
	return owned, producers
}

// Reconfigure takes the checks after a config reload. Conditions of types
// an enabled check still drives stay as they are; those no enabled check
// drives any more are removed from the node, as at a start with the check
// disabled.
func (c *Conditions) Reconfigure(all, enabled []*check.Definition) {
	owned, producers := ownedTypes(all, enabled)
	c.mu.Lock()
	for t := range c.producers {
		if producers[t] == nil {
			c.removed = append(c.removed, t)
		}
	}
	for name := range c.latest {
		if !slices.ContainsFunc(enabled, func(d *check.Definition) bool { return d.Name == name }) {
			delete(c.latest, name)
		}
	}
	for _, t := range c.owned {
		if !slices.Contains(owned, t) {
			owned = append(owned, t) // still ours to remove
		}
	}
	c.owned, c.producers = owned, producers
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Report records a result and wakes the writer. It never blocks.
func (c *Conditions) Report(res check.Result) {
	c.mu.Lock()
	c.latest[res.Check] = res
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Run reads the node's current conditions, then writes changes as results
// arrive and heartbeats every Heartbeat, retrying with backoff while the
// API server is away. It returns when ctx is done.
func (c *Conditions) Run(ctx context.Context) error {
	onNode, stale, err := c.readNode(ctx)
	if err != nil {
		return nil // ctx done
	}
	tick := c.o.Clock.NewTicker(c.o.Heartbeat / 4)
	defer tick.Stop()
	var retry <-chan time.Time
	backoff := time.Second
	var lastWrite time.Time
	for _, cond := range onNode {
		if t := cond.LastHeartbeatTime.Time; lastWrite.IsZero() || t.Before(lastWrite) {
			lastWrite = t
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.wake:
		case <-tick.C():
		case <-retry:
			retry = nil
		}
		now := c.o.Clock.Now()
		c.mu.Lock()
		for _, t := range c.removed {
			if c.producers[t] != nil {
				continue // driven again by a later reconfigure
			}
			c.o.Metrics.forgetCondition(t)
			if _, ok := onNode[t]; ok {
				stale = append(stale, t)
				delete(onNode, t)
			}
		}
		c.removed = nil
		want := desiredConditions(c.producers, c.latest, onNode, now)
		c.mu.Unlock()
		c.recordMetrics(want)
		heartbeatDue := now.Sub(lastWrite) >= c.o.Heartbeat
		if len(want) == 0 && len(stale) == 0 {
			continue
		}
		if !heartbeatDue && len(stale) == 0 && sameConditions(want, onNode) {
			continue
		}
		patch, err := conditionPatch(want, stale)
		if err != nil {
			c.o.Log.Error("build node condition patch", "err", err)
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, requestTimeout)
		err = c.api.PatchNodeStatus(rctx, c.o.Node, patch)
		cancel()
		c.o.Metrics.request("patch_node_status", err)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			c.o.Log.Warn("write node conditions; will retry", "node", c.o.Node, "retry_in", backoff, "err", err)
			retry = c.o.Clock.After(backoff)
			backoff = min(2*backoff, time.Minute)
			continue
		}
		backoff = time.Second
		if len(stale) > 0 {
			c.o.Log.Info("removed node conditions no enabled check drives", "conditions", stale)
		}
		for t, cond := range want {
			if old, ok := onNode[t]; !ok || old.Status != cond.Status {
				c.o.Log.Info("node condition changed", "condition", t, "status", cond.Status, "reason", cond.Reason)
			}
		}
		for t, cond := range want {
			onNode[t] = cond
		}
		stale, lastWrite = nil, now
	}
}

// readNode fetches the node until it succeeds, returning the conditions it
// holds of the enabled types (so a restart does not flap them) and the owned
// types present that no enabled check drives.
func (c *Conditions) readNode(ctx context.Context) (map[string]corev1.NodeCondition, []string, error) {
	backoff := time.Second
	for {
		rctx, cancel := context.WithTimeout(ctx, requestTimeout)
		n, err := c.api.GetNode(rctx, c.o.Node)
		cancel()
		c.o.Metrics.request("get_node", err)
		if err == nil {
			have := map[string]corev1.NodeCondition{}
			var stale []string
			c.mu.Lock()
			defer c.mu.Unlock()
			for _, cond := range n.Status.Conditions {
				t := string(cond.Type)
				switch {
				case c.producers[t] != nil:
					have[t] = cond
				case slices.Contains(c.owned, t):
					stale = append(stale, t)
				}
			}
			return have, stale, nil
		}
		c.o.Log.Warn("read node; will retry", "node", c.o.Node, "retry_in", backoff, "err", err)
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-c.o.Clock.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

func (c *Conditions) recordMetrics(want map[string]corev1.NodeCondition) {
	if c.o.Metrics == nil {
		return
	}
	for t, cond := range want {
		for _, s := range []corev1.ConditionStatus{corev1.ConditionTrue, corev1.ConditionFalse, corev1.ConditionUnknown} {
			v := 0.0
			if cond.Status == s {
				v = 1
			}
			c.o.Metrics.Conditions.WithLabelValues(t, string(s)).Set(v)
		}
	}
}

// desiredConditions computes each enabled condition type from the latest
// results of the checks that drive it (check.StateOf). A type is left out
// until all its checks have run once. lastTransitionTime is kept from prev
// when the status is unchanged.
func desiredConditions(producers map[string][]string, latest map[string]check.Result, prev map[string]corev1.NodeCondition, now time.Time) map[string]corev1.NodeCondition {
	out := map[string]corev1.NodeCondition{}
	for t, checks := range producers {
		st, ok := check.StateOf(t, checks, latest)
		if !ok {
			continue
		}
		cond := corev1.NodeCondition{Type: corev1.NodeConditionType(t), Status: corev1.ConditionStatus(st.Status), Reason: st.Reason, Message: joinMessages(st.Messages)}
		cond.LastHeartbeatTime = metav1.NewTime(now)
		cond.LastTransitionTime = metav1.NewTime(now)
		if p, ok := prev[t]; ok && p.Status == cond.Status && !p.LastTransitionTime.IsZero() {
			cond.LastTransitionTime = p.LastTransitionTime
		}
		out[t] = cond
	}
	return out
}

func joinMessages(msgs []string) string {
	s := strings.Join(msgs, "; ")
	if len(s) > maxMessage {
		s = s[:maxMessage-3] + "..."
	}
	return s
}

// sameConditions reports whether every condition in a is already in b as a
// person sees it: status, reason, and the message of a problem. A healthy
// condition's message (e.g. how many service ports were verified) changes
// with the cluster, not the node: it waits for the next heartbeat, or every
// node would patch its status on every Service change.
func sameConditions(a, b map[string]corev1.NodeCondition) bool {
	for t, x := range a {
		y, ok := b[t]
		if !ok || x.Status != y.Status || x.Reason != y.Reason {
			return false
		}
		if x.Status != corev1.ConditionFalse && x.Message != y.Message {
			return false
		}
	}
	return true
}

// conditionPatch is a strategic merge patch of status.conditions (merged by
// type) setting want and deleting stale.
func conditionPatch(want map[string]corev1.NodeCondition, stale []string) ([]byte, error) {
	types := make([]string, 0, len(want))
	for t := range want {
		types = append(types, t)
	}
	slices.Sort(types)
	items := make([]any, 0, len(want)+len(stale))
	for _, t := range types {
		items = append(items, want[t])
	}
	for _, t := range stale {
		items = append(items, map[string]string{"type": t, "$patch": "delete"})
	}
	return json.Marshal(map[string]any{"status": map[string]any{"conditions": items}})
}
