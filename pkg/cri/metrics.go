package cri

import (
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

const metricsPrefix = "node_doctor_cri_"

// Metrics describes the runtime as the latest snapshot saw it, and every CRI
// call. It is a prometheus.Collector; hand it to the agent's registry.
// Labels are bounded: CRI method names, gRPC codes, CRI states.
type Metrics struct {
	up         prometheus.Gauge
	condition  *prometheus.GaugeVec
	sandboxes  *prometheus.GaugeVec
	containers *prometheus.GaugeVec
	restarts   prometheus.Counter
	latency    *prometheus.HistogramVec
	errs       *prometheus.CounterVec

	mu       sync.Mutex
	attempts map[string]uint32 // sandbox id + container name -> highest attempt seen
}

// NewMetrics returns the CRI metrics with every state series present.
func NewMetrics() *Metrics {
	m := &Metrics{
		up: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: metricsPrefix + "runtime_up",
			Help: "1 when the latest CRI snapshot succeeded, 0 when the runtime was unreachable or hung.",
		}),
		condition: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: metricsPrefix + "runtime_condition",
			Help: "CRI runtime conditions from Status (RuntimeReady, NetworkReady): 1 true, 0 false.",
		}, []string{"condition"}),
		sandboxes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: metricsPrefix + "pod_sandboxes",
			Help: "Pod sandboxes by CRI state in the latest snapshot.",
		}, []string{"state"}),
		containers: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: metricsPrefix + "containers",
			Help: "Containers by CRI state in the latest snapshot.",
		}, []string{"state"}),
		restarts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: metricsPrefix + "container_restarts_total",
			Help: "Container restarts seen: rises of a container's attempt count between snapshots.",
		}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    metricsPrefix + "request_duration_seconds",
			Help:    "Latency of CRI calls by method.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"method"}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricsPrefix + "request_errors_total",
			Help: "Failed CRI calls by method and gRPC code.",
		}, []string{"method", "code"}),
		attempts: map[string]uint32{},
	}
	for _, c := range []string{"RuntimeReady", "NetworkReady"} {
		m.condition.WithLabelValues(c)
	}
	for _, s := range runtimeapi.PodSandboxState_name {
		m.sandboxes.WithLabelValues(sandboxState(runtimeapi.PodSandboxState(runtimeapi.PodSandboxState_value[s])))
	}
	for _, s := range runtimeapi.ContainerState_name {
		m.containers.WithLabelValues(containerState(runtimeapi.ContainerState(runtimeapi.ContainerState_value[s])))
	}
	return m
}

// Observe records one CRI call; it is a CallObserver.
func (m *Metrics) Observe(method string, d time.Duration, err error) {
	m.latency.WithLabelValues(method).Observe(d.Seconds())
	if err != nil {
		m.errs.WithLabelValues(method, status.Code(err).String()).Inc()
	}
}

// observe updates the state metrics from a snapshot.
func (m *Metrics) observe(s *Snapshot, err error) {
	if err != nil || s == nil {
		m.up.Set(0)
		return
	}
	m.up.Set(1)
	for _, c := range s.Status.GetStatus().GetConditions() {
		if c.GetType() == "RuntimeReady" || c.GetType() == "NetworkReady" {
			m.condition.WithLabelValues(c.GetType()).Set(b2f(c.GetStatus()))
		}
	}
	sb := map[string]int{}
	for _, x := range s.Sandboxes {
		sb[sandboxState(x.GetState())]++
	}
	for st := range runtimeapi.PodSandboxState_value {
		k := sandboxState(runtimeapi.PodSandboxState(runtimeapi.PodSandboxState_value[st]))
		m.sandboxes.WithLabelValues(k).Set(float64(sb[k]))
	}
	cs := map[string]int{}
	m.mu.Lock()
	defer m.mu.Unlock()
	first := len(m.attempts) == 0
	seen := make(map[string]uint32, len(s.Containers))
	for i := range s.Containers {
		c := &s.Containers[i]
		cs[containerState(c.GetState())]++
		k := c.GetPodSandboxId() + "/" + c.GetMetadata().GetName()
		seen[k] = max(seen[k], c.GetMetadata().GetAttempt())
	}
	for k, a := range seen {
		if prev, ok := m.attempts[k]; ok && a > prev {
			m.restarts.Add(float64(a - prev))
		} else if !ok && !first && a > 0 {
			// A container we had not seen whose attempt is already past 0
			// restarted since the last snapshot (kubelet removed the old one).
			m.restarts.Add(1)
		}
	}
	m.attempts = seen
	for st := range runtimeapi.ContainerState_value {
		k := containerState(runtimeapi.ContainerState(runtimeapi.ContainerState_value[st]))
		m.containers.WithLabelValues(k).Set(float64(cs[k]))
	}
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.collectors() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.collectors() {
		c.Collect(ch)
	}
}

func (m *Metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.up, m.condition, m.sandboxes, m.containers, m.restarts, m.latency, m.errs}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// sandboxState is "ready" or "notready", as crictl pods prints.
func sandboxState(s runtimeapi.PodSandboxState) string {
	return strings.ToLower(strings.TrimPrefix(strings.ReplaceAll(s.String(), "_", ""), "SANDBOX"))
}

// containerState is "created", "running", "exited" or "unknown".
func containerState(s runtimeapi.ContainerState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "CONTAINER_"))
}
