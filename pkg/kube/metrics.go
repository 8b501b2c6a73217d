package kube

import "github.com/prometheus/client_golang/prometheus"

// Metrics counts what the reporters did against the API server.
type Metrics struct {
	Requests      *prometheus.CounterVec
	APIRequests   *prometheus.CounterVec
	EventsEmitted *prometheus.CounterVec
	EventsDropped *prometheus.CounterVec
	EventsQueued  prometheus.Gauge
	Conditions    *prometheus.GaugeVec
}

// NewMetrics builds the metrics; Register adds them to a registry.
func NewMetrics() *Metrics {
	return &Metrics{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "node_doctor", Subsystem: "kube", Name: "requests_total",
			Help: "Requests node-doctor made to the Kubernetes API server, by operation and result (ok or error).",
		}, []string{"operation", "result"}),
		APIRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "node_doctor", Subsystem: "kube", Name: "api_requests_total",
			Help: "HTTP requests to the Kubernetes API server from every client in the process (informers' lists and watches included), by verb, resource and status code (\"error\" when no response came).",
		}, []string{"verb", "resource", "code"}),
		EventsEmitted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "node_doctor", Subsystem: "kube", Name: "events_total",
			Help: "Events written: created (new object) or aggregated (count raised on an existing one).",
		}, []string{"action"}),
		EventsDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "node_doctor", Subsystem: "kube", Name: "events_dropped_total",
			Help: "Events not written, by reason (queue_full, rejected); each is also logged.",
		}, []string{"reason"}),
		EventsQueued: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "node_doctor", Subsystem: "kube", Name: "events_queued",
			Help: "Events waiting to be written (e.g. while the API server is away).",
		}),
		Conditions: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "node_doctor", Subsystem: "kube", Name: "node_condition",
			Help: "Node conditions node-doctor owns as last computed: 1 for the current status, 0 for the others.",
		}, []string{"condition", "status"}),
	}
}

// Register adds the metrics to reg.
func (m *Metrics) Register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.Requests, m.APIRequests, m.EventsEmitted, m.EventsDropped, m.EventsQueued, m.Conditions} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// forgetCondition removes the series of a condition type no check drives.
func (m *Metrics) forgetCondition(t string) {
	if m == nil {
		return
	}
	m.Conditions.DeletePartialMatch(prometheus.Labels{"condition": t})
}

func (m *Metrics) request(op string, err error) {
	if m == nil {
		return
	}
	res := "ok"
	if err != nil {
		res = "error"
	}
	m.Requests.WithLabelValues(op, res).Inc()
}
