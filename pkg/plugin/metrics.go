package plugin

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metric descriptions. The label "source" is a monitor file's source, so
// cardinality stays low.
var (
	runsDesc = prometheus.NewDesc("node_doctor_plugin_runs_total",
		"Plugin script runs, by what they answered (ok, problem, unknown).", []string{"source", "status"}, nil)
	timeoutsDesc = prometheus.NewDesc("node_doctor_plugin_timeouts_total",
		"Plugin scripts killed at their timeout.", []string{"source"}, nil)
	pluginDroppedDesc = prometheus.NewDesc("node_doctor_plugin_findings_dropped_total",
		"Temporary rule findings dropped because more piled up between two runs than the check keeps.", []string{"source"}, nil)
)

// Describe implements prometheus.Collector.
func (c *Checker) Describe(ch chan<- *prometheus.Desc) {
	ch <- runsDesc
	ch <- timeoutsDesc
	ch <- pluginDroppedDesc
}

// Collect implements prometheus.Collector: counters since the start (none
// until the check is started), summed over files with the same source.
func (c *Checker) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	rs := c.runners
	c.mu.Unlock()
	type counts struct {
		runs              [Unknown + 1]uint64
		timeouts, dropped uint64
	}
	by := map[string]*counts{}
	for _, r := range rs {
		n := by[r.mon.Source]
		if n == nil {
			n = &counts{}
			by[r.mon.Source] = n
		}
		r.mu.Lock()
		for s, v := range r.runs {
			n.runs[s] += v
		}
		n.timeouts += r.timeouts
		n.dropped += r.droppedTotal
		r.mu.Unlock()
	}
	for source, n := range by {
		for s := OK; s <= Unknown; s++ {
			ch <- prometheus.MustNewConstMetric(runsDesc, prometheus.CounterValue, float64(n.runs[s]), source, s.String())
		}
		ch <- prometheus.MustNewConstMetric(timeoutsDesc, prometheus.CounterValue, float64(n.timeouts), source)
		ch <- prometheus.MustNewConstMetric(pluginDroppedDesc, prometheus.CounterValue, float64(n.dropped), source)
	}
}
