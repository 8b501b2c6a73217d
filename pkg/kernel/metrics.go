package kernel

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metric descriptions. The label "source" is a rule file's source name
// (kernel-monitor for the built-in rules), so cardinality stays low.
var (
	linesDesc = prometheus.NewDesc("node_doctor_kernel_log_lines_read_total",
		"Log lines read by the kernel-log check.", []string{"source"}, nil)
	matchesDesc = prometheus.NewDesc("node_doctor_kernel_log_matches_total",
		"Log lines that matched a rule, by the rule's reason.", []string{"source", "reason"}, nil)
	droppedDesc = prometheus.NewDesc("node_doctor_kernel_log_findings_dropped_total",
		"Findings dropped because more piled up between two runs than the check keeps.", []string{"source"}, nil)
	overrunsDesc = prometheus.NewDesc("node_doctor_kernel_log_buffer_overruns_total",
		"Times the kernel ring buffer overwrote records before they were read.", []string{"source"}, nil)
	parseErrorsDesc = prometheus.NewDesc("node_doctor_kernel_log_parse_errors_total",
		"Log records that could not be parsed.", []string{"source"}, nil)
)

// Describe implements prometheus.Collector.
func (c *LogChecker) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{linesDesc, matchesDesc, droppedDesc, overrunsDesc, parseErrorsDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: the counters of the followed
// logs (none until the check is started).
func (c *LogChecker) Collect(ch chan<- prometheus.Metric) {
	for source, st := range c.Stats() {
		counter := func(d *prometheus.Desc, v uint64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), append([]string{source}, labels...)...)
		}
		counter(linesDesc, st.Lines)
		counter(droppedDesc, st.Dropped)
		counter(overrunsDesc, st.Overruns)
		counter(parseErrorsDesc, st.ParseErrors)
		for reason, n := range st.MatchesByReason {
			counter(matchesDesc, n, reason)
		}
	}
}
