package metrics

import (
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/node-doctor/node-doctor/pkg/check"
)

// npd keeps node-problem-detector's two problem metrics, named as NPD
// names them (no prefix, no _total) so that dashboards and alerts written
// for NPD keep working:
//
//   - problem_gauge{type,reason}: 1 while condition type is True with
//     reason; when the reason changes, the previous reason's series is set
//     to 0, as NPD does, so each type has at most one series at 1.
//   - problem_counter{reason}: NPD counts its problem events — a temporary
//     problem, and a condition turning True or changing its reason while
//     True. Here: the same for condition types, and for findings that drive
//     no condition, a warning or problem the check's previous run did not
//     have.
//
// As in NPD, both start at 0 for the rules of NPD rule files: the counter
// for every rule's reason, the gauge for every permanent rule's.
type npd struct {
	producers map[string][]string // condition type -> checks driving it
	types     map[string][]string // check -> condition types it drives

	mu      sync.Mutex
	latest  map[string]check.Result
	seen    map[string]map[findingKey]bool // check -> findings of its last run
	reasons map[string]string              // type -> reason of its series
	status  map[string]check.ConditionStatus

	counter *prometheus.CounterVec
	gauge   *prometheus.GaugeVec
}

type findingKey struct {
	reason, message string
	object          check.Object
}

func newNPD(defs []*check.Definition) *npd {
	n := &npd{
		latest: map[string]check.Result{}, seen: map[string]map[findingKey]bool{},
		reasons: map[string]string{}, status: map[string]check.ConditionStatus{},
		counter: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "problem_counter",
			Help: "Number of times a specific type of problem have occurred (node-problem-detector's metric).",
		}, []string{"reason"}),
		gauge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "problem_gauge",
			Help: "Whether a specific type of problem is affecting the node or not (node-problem-detector's metric).",
		}, []string{"type", "reason"}),
	}
	n.producers, n.types = conditionMaps(defs)
	n.initRules(defs)
	return n
}

// conditionMaps maps each condition type to the checks driving it, and
// each check to its types.
func conditionMaps(defs []*check.Definition) (producers, types map[string][]string) {
	producers, types = map[string][]string{}, map[string][]string{}
	for _, d := range defs {
		for _, t := range d.ConditionTypes() {
			producers[t] = append(producers[t], d.Name)
			types[d.Name] = append(types[d.Name], t)
		}
	}
	return producers, types
}

// initRules creates the series of the checks' NPD rules at 0; series that
// already have a value keep it.
func (n *npd) initRules(defs []*check.Definition) {
	for _, d := range defs {
		l, ok := d.Check.(check.RuleLister)
		if !ok {
			continue
		}
		for _, r := range l.Rules() {
			n.counter.WithLabelValues(r.Reason)
			if r.Condition != "" {
				n.gauge.WithLabelValues(r.Condition, r.Reason)
			}
		}
	}
}

func (n *npd) report(res check.Result) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.latest[res.Check] = res
	if res.Status != check.StatusError {
		// A run that could not complete says nothing of which problems
		// are gone: the next complete run is compared with the last one.
		now := map[findingKey]bool{}
		for _, f := range res.Findings {
			if f.Severity == check.SeverityOK || (f.Condition != "" && f.Severity == check.SeverityProblem) {
				continue // a condition's problems count as the condition changes
			}
			k := findingKey{f.Reason, f.Message, f.Object}
			if !n.seen[res.Check][k] && !now[k] {
				n.counter.WithLabelValues(f.Reason).Inc()
			}
			now[k] = true
		}
		n.seen[res.Check] = now
	}
	for _, t := range n.types[res.Check] {
		st, ok := check.StateOf(t, n.producers[t], n.latest)
		if !ok || st.Status == check.ConditionUnknown {
			continue
		}
		if st.Status == check.ConditionTrue && (n.status[t] != check.ConditionTrue || n.reasons[t] != st.Reason) {
			n.counter.WithLabelValues(st.Reason).Inc()
		}
		n.status[t] = st.Status
		if prev, ok := n.reasons[t]; ok && prev != st.Reason {
			n.gauge.WithLabelValues(t, prev).Set(0)
		}
		n.reasons[t] = st.Reason
		v := 0.0
		if st.Status == check.ConditionTrue {
			v = 1
		}
		n.gauge.WithLabelValues(t, st.Reason).Set(v)
	}
}

// npdNames are the metric names kept as NPD has them.
var npdNames = []string{"problem_counter", "problem_gauge"}

func isNPDName(name string) bool { return slices.Contains(npdNames, name) }

// reconfigure takes the checks that now run: the problem_gauge series of
// condition types no check drives any more are removed; the others keep
// their values.
func (n *npd) reconfigure(defs []*check.Definition) {
	producers, types := conditionMaps(defs)
	n.mu.Lock()
	defer n.mu.Unlock()
	for t := range n.reasons {
		if producers[t] == nil {
			n.gauge.DeletePartialMatch(prometheus.Labels{"type": t})
			delete(n.reasons, t)
			delete(n.status, t)
		}
	}
	for name := range n.latest {
		if !slices.ContainsFunc(defs, func(d *check.Definition) bool { return d.Name == name }) {
			delete(n.latest, name)
			delete(n.seen, name)
		}
	}
	n.producers, n.types = producers, types
	n.initRules(defs)
}
