// Package metrics exposes check results as Prometheus metrics on the agent's
// own registry.
package metrics

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/node-doctor/node-doctor/pkg/check"
	"github.com/node-doctor/node-doctor/pkg/version"
)

const namespace = "node_doctor"

var (
	statusDesc = prometheus.NewDesc(namespace+"_check_status",
		"Outcome of the latest run of a check: 1 for its current status, 0 for the others.",
		[]string{"check", "status"}, nil)
	findingsDesc = prometheus.NewDesc(namespace+"_findings",
		"Findings of warning or problem severity in the latest run of a check.",
		[]string{"check", "condition", "reason", "severity"}, nil)
	lastRunDesc = prometheus.NewDesc(namespace+"_check_last_run_timestamp_seconds",
		"When the latest run of a check started, as a Unix time.",
		[]string{"check"}, nil)
)

// Reporter records results into Prometheus metrics. It implements
// check.Reporter and prometheus.Collector.
type Reporter struct {
	Registry *prometheus.Registry

	duration *prometheus.HistogramVec
	errs     *prometheus.CounterVec
	timeouts *prometheus.CounterVec
	skipped  *prometheus.CounterVec
	interval *prometheus.GaugeVec
	npd      *npd
	// Config reloads: counted by result, and whether the latest worked.
	reloads    *prometheus.CounterVec
	reloadOK   prometheus.Gauge
	reloadTime prometheus.Gauge

	mu    sync.Mutex
	last  map[string]check.Result
	known []string // checks with series
}

// New builds a registry holding the check metrics, build info and the Go and
// process collectors, with series for every check in defs present from the
// start.
func New(defs []*check.Definition) *Reporter {
	r := &Reporter{
		Registry: prometheus.NewRegistry(),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "check_duration_seconds",
			Help:    "How long check runs took.",
			Buckets: []float64{.001, .005, .01, .05, .1, .5, 1, 5, 10, 30},
		}, []string{"check"}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "check_errors_total",
			Help: "Check runs that could not complete (errors, timeouts, skips).",
		}, []string{"check"}),
		timeouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "check_timeouts_total",
			Help: "Check runs abandoned because they outlived their timeout.",
		}, []string{"check"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "check_skipped_total",
			Help: "Check runs skipped because the previous run had not returned.",
		}, []string{"check"}),
		interval: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "check_interval_seconds",
			Help: "How often a check is configured to run.",
		}, []string{"check"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "config_reload_total",
			Help: "Config reloads (SIGHUP or a changed file), by result: success or failure (the running config stays).",
		}, []string{"result"}),
		reloadOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "config_last_reload_success",
			Help: "Whether the latest config reload worked (1) or not (0); 1 before any.",
		}),
		reloadTime: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "config_last_reload_success_timestamp_seconds",
			Help: "When the config in force was loaded, as a Unix time.",
		}),
		last: map[string]check.Result{},
		npd:  newNPD(defs),
	}
	r.reloads.WithLabelValues("success")
	r.reloads.WithLabelValues("failure")
	r.reloadOK.Set(1)
	r.reloadTime.SetToCurrentTime()
	for _, d := range defs {
		r.known = append(r.known, d.Name)
		r.interval.WithLabelValues(d.Name).Set(d.Interval.Seconds())
		r.duration.WithLabelValues(d.Name)
		r.errs.WithLabelValues(d.Name)
		r.timeouts.WithLabelValues(d.Name)
		r.skipped.WithLabelValues(d.Name)
	}
	v, rev := version.Get()
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "build_info",
		Help:        "A metric with a constant 1 value labelled by node-doctor's version.",
		ConstLabels: prometheus.Labels{"version": v, "revision": rev, "goversion": runtime.Version()},
	})
	buildInfo.Set(1)
	r.Registry.MustRegister(r, r.duration, r.errs, r.timeouts, r.skipped, r.interval, buildInfo, r.npd.counter, r.npd.gauge,
		r.reloads, r.reloadOK, r.reloadTime,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// Report records one result.
func (r *Reporter) Report(res check.Result) {
	r.duration.WithLabelValues(res.Check).Observe(res.Duration.Seconds())
	if res.Status == check.StatusError {
		r.errs.WithLabelValues(res.Check).Inc()
		switch {
		case errors.Is(res.Err, check.ErrTimeout):
			r.timeouts.WithLabelValues(res.Check).Inc()
		case errors.Is(res.Err, check.ErrStillRunning):
			r.skipped.WithLabelValues(res.Check).Inc()
		}
	}
	r.mu.Lock()
	r.last[res.Check] = res
	r.mu.Unlock()
	r.npd.report(res)
}

// Describe sends the descriptors of the result-derived metrics.
func (r *Reporter) Describe(ch chan<- *prometheus.Desc) {
	ch <- statusDesc
	ch <- findingsDesc
	ch <- lastRunDesc
}

// Collect emits the metrics derived from the latest result of each check, so
// that findings that went away leave no stale series.
func (r *Reporter) Collect(ch chan<- prometheus.Metric) {
	r.mu.Lock()
	defer r.mu.Unlock()
	type key struct{ check, cond, reason, sev string }
	for name, res := range r.last {
		for _, s := range check.Statuses {
			v := 0.0
			if s == res.Status {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(statusDesc, prometheus.GaugeValue, v, name, string(s))
		}
		ch <- prometheus.MustNewConstMetric(lastRunDesc, prometheus.GaugeValue, float64(res.Start.UnixNano())/1e9, name)
		counts := map[key]int{}
		for _, f := range res.Findings {
			if f.Severity == check.SeverityOK {
				continue
			}
			counts[key{name, f.Condition, f.Reason, f.Severity.String()}]++
		}
		for k, n := range counts {
			ch <- prometheus.MustNewConstMetric(findingsDesc, prometheus.GaugeValue, float64(n), k.check, k.cond, k.reason, k.sev)
		}
	}
}

// Reconfigure takes the checks that run after a config reload. Series of
// checks that still run keep their values; those of removed checks go.
// Call it once the removed checks have stopped.
func (r *Reporter) Reconfigure(defs []*check.Definition) {
	now := map[string]bool{}
	for _, d := range defs {
		now[d.Name] = true
		r.interval.WithLabelValues(d.Name).Set(d.Interval.Seconds())
		r.duration.WithLabelValues(d.Name)
		r.errs.WithLabelValues(d.Name)
		r.timeouts.WithLabelValues(d.Name)
		r.skipped.WithLabelValues(d.Name)
	}
	r.mu.Lock()
	for name := range r.last {
		if !now[name] {
			delete(r.last, name)
		}
	}
	r.mu.Unlock()
	for _, name := range r.names(defs) {
		if !now[name] {
			l := prometheus.Labels{"check": name}
			r.interval.DeletePartialMatch(l)
			r.duration.DeletePartialMatch(l)
			r.errs.DeletePartialMatch(l)
			r.timeouts.DeletePartialMatch(l)
			r.skipped.DeletePartialMatch(l)
		}
	}
	r.npd.reconfigure(defs)
}

// names lists the checks that have series: those in defs and those of
// the previous config.
func (r *Reporter) names(defs []*check.Definition) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := slices.Clone(r.known)
	r.known = r.known[:0]
	for _, d := range defs {
		r.known = append(r.known, d.Name)
	}
	return out
}

// SwapCheckCollectors unregisters the collectors of checks in old that are
// not in defs and registers those of checks new in defs (by pointer).
func (r *Reporter) SwapCheckCollectors(old, defs []*check.Definition) error {
	for _, d := range old {
		if c, ok := d.Check.(prometheus.Collector); ok && !slices.Contains(defs, d) {
			r.Registry.Unregister(c)
		}
	}
	var fresh []*check.Definition
	for _, d := range defs {
		if !slices.Contains(old, d) {
			fresh = append(fresh, d)
		}
	}
	return r.RegisterCheckCollectors(fresh)
}

// ConfigReloaded counts a config reload; ok says whether the new config
// is in force.
func (r *Reporter) ConfigReloaded(ok bool) {
	if ok {
		r.reloads.WithLabelValues("success").Inc()
		r.reloadOK.Set(1)
		r.reloadTime.SetToCurrentTime()
		return
	}
	r.reloads.WithLabelValues("failure").Inc()
	r.reloadOK.Set(0)
}

// RegisterCheckCollectors registers the checks that expose metrics of their
// own (those implementing prometheus.Collector) and extra collectors.
func (r *Reporter) RegisterCheckCollectors(defs []*check.Definition, extra ...prometheus.Collector) error {
	cs := extra
	for _, d := range defs {
		if c, ok := d.Check.(prometheus.Collector); ok {
			cs = append(cs, c)
		}
	}
	for _, c := range cs {
		if err := r.Registry.Register(c); err != nil {
			return fmt.Errorf("metrics: register collector: %w", err)
		}
	}
	return nil
}
