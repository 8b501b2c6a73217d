package kubelet

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/clock"

	"github.com/node-doctor/node-doctor/pkg/check"
)

// HealthSettings tune the kubelet-health check. The names follow NPD's
// health-checker flags where they mean the same.
type HealthSettings struct {
	// HealthzAddress overrides the host:port read from the kubelet's
	// config file and flags.
	HealthzAddress string `yaml:"healthzAddress"`
	// HealthzTimeout: NPD's --health-check-timeout; a run waits at most 3/4
	// of the check's timeout.
	HealthzTimeout time.Duration `yaml:"healthzTimeout"`
	// Cooldown: NPD's --cooldown-time, how long after it starts a kubelet
	// may fail healthz without being reported.
	Cooldown time.Duration `yaml:"cooldown"`
	// Grace: how long a running agent sees the kubelet gone or failing
	// before reporting it; a restart is quicker.
	Grace time.Duration `yaml:"grace"`
	// MaxLeaseAge: a Lease renewed longer ago is stale; 0 means the
	// Lease's own duration (40s by default).
	MaxLeaseAge time.Duration `yaml:"maxLeaseAge"`
}

// Validate range-checks the settings.
func (s *HealthSettings) Validate() error {
	if s.HealthzAddress != "" && !validHostPort(s.HealthzAddress) {
		return fmt.Errorf("healthzAddress %q: want IP:port (127.0.0.1:10248), or leave it empty to read the kubelet's own", s.HealthzAddress)
	}
	if s.HealthzTimeout < 100*time.Millisecond || s.HealthzTimeout > time.Minute {
		return fmt.Errorf("healthzTimeout %s is not between 100ms and 1m", s.HealthzTimeout)
	}
	if s.Cooldown < 0 || s.Cooldown > time.Hour {
		return fmt.Errorf("cooldown %s is not between 0 and 1h", s.Cooldown)
	}
	if s.Grace < 0 || s.Grace > 10*time.Minute {
		return fmt.Errorf("grace %s is not between 0 and 10m", s.Grace)
	}
	if s.MaxLeaseAge != 0 && (s.MaxLeaseAge < 10*time.Second || s.MaxLeaseAge > time.Hour) {
		return fmt.Errorf("maxLeaseAge %s is not 0 (the Lease's duration) or between 10s and 1h", s.MaxLeaseAge)
	}
	return nil
}

// HealthDeps are what the kubelet-health check reads.
type HealthDeps struct {
	// FS is the node's root: the kubelet's config file and var/lib/kubelet.
	FS fs.FS
	// Processes finds the kubelet; nil: ProcFS over FS.
	Processes Processes
	// Healthz asks it; nil: HTTPHealthz.
	Healthz Healthz
	// API reads the node's Lease and Node; nil without a cluster.
	API   API
	Clock clock.Clock
}

// Reasons of the kubelet-health check. KubeletIsHealthy and
// KubeletUnhealthy are NPD's health-checker reasons.
const (
	ReasonHealthy      = "KubeletIsHealthy"
	ReasonUnhealthy    = "KubeletUnhealthy"
	ReasonNotRunning   = "KubeletNotRunning"
	ReasonLeaseStale   = "KubeletLeaseStale"
	ReasonPLEG         = "PLEGUnhealthy"
	ReasonStarting     = "KubeletStarting"
	ReasonCheckPending = "KubeletCheckPending"
)

// HealthCheck is the kubelet-health check.
func HealthCheck(d HealthDeps) check.Definition {
	s := &HealthSettings{HealthzTimeout: 5 * time.Second, Cooldown: time.Minute, Grace: 10 * time.Second}
	c := &healthCheck{d: d, s: s}
	return check.Definition{
		Name:        "kubelet-health",
		Area:        "node",
		Description: "the kubelet runs, answers /healthz, renews this node's Lease and reports PLEG healthy",
		Interval:    10 * time.Second,
		Timeout:     10 * time.Second,
		Conditions:  []string{check.ConditionKubeletUnhealthy},
		Settings:    s,
		Check:       c,
	}
}

type healthCheck struct {
	d HealthDeps
	s *HealthSettings

	mu sync.Mutex
	// started: the agent runs us on an interval, so a short outage can be
	// watched for its grace; a one-shot report has no second look.
	started      bool
	absentSince  time.Time
	failingSince time.Time
}

// Start marks the check as running under the agent.
func (c *healthCheck) Start(context.Context) error {
	c.mu.Lock()
	c.started = true
	c.mu.Unlock()
	return nil
}

func (c *healthCheck) clock() clock.PassiveClock {
	if c.d.Clock == nil {
		return clock.RealClock{}
	}
	return c.d.Clock
}

func (c *healthCheck) Run(ctx context.Context) ([]check.Finding, error) {
	procs := c.d.Processes
	if procs == nil {
		procs = ProcFS{FS: c.d.FS, Clock: c.clock()}
	}
	ps, err := procs.Kubelets(ctx)
	if err != nil {
		return nil, err
	}
	now := c.clock().Now()
	var lease *coordinationv1.Lease
	var leaseErr error = errors.New("no cluster")
	if c.d.API != nil {
		lease, leaseErr = c.d.API.NodeLease()
	}
	if len(ps) == 0 {
		return c.absent(now, lease, leaseErr)
	}
	p := slices.MaxFunc(ps, func(a, b Process) int { return a.Started.Compare(b.Started) })
	c.mu.Lock()
	c.absentSince = time.Time{}
	c.mu.Unlock()
	det := map[string]string{"pid": fmt.Sprint(p.PID), "started": p.Started.UTC().Format(time.RFC3339)}
	if p.Stopped() {
		return []check.Finding{c.finding(check.SeverityProblem, ReasonUnhealthy, fmt.Sprintf(
			"the kubelet (pid %d) is stopped (process state T: SIGSTOP or a debugger): pods on this node are neither started nor reported; resume it (kill -CONT %d) or restart it (systemctl restart kubelet)", p.PID, p.PID), det)}, nil
	}

	if f := c.healthz(ctx, now, p, det); f != nil {
		return []check.Finding{*f}, nil
	}
	var out []check.Finding
	if f := c.leaseStale(ctx, now, p, lease, det); f != nil {
		out = append(out, *f)
	}
	if f := c.pleg(now, p); f != nil {
		out = append(out, *f)
	}
	if len(out) > 0 {
		return out, nil
	}
	msg := fmt.Sprintf("the kubelet (pid %d, up %s) is healthy", p.PID, now.Sub(p.Started).Truncate(time.Second))
	if lease != nil && lease.Spec.RenewTime != nil {
		msg += fmt.Sprintf(" and renewed this node's Lease %s ago", now.Sub(lease.Spec.RenewTime.Time).Truncate(time.Second))
	}
	return []check.Finding{c.finding(check.SeverityOK, ReasonHealthy, msg, det)}, nil
}

// absent judges a node with no kubelet process.
func (c *healthCheck) absent(now time.Time, lease *coordinationv1.Lease, leaseErr error) ([]check.Finding, error) {
	_, dirErr := fs.Stat(c.d.FS, "var/lib/kubelet")
	if lease == nil && dirErr != nil {
		why := "this node has no Lease in kube-node-lease"
		if leaseErr != nil {
			why = "its Lease could not be read (" + leaseErr.Error() + ")"
		}
		return nil, check.NotApplicable("no kubelet runs here, there is no /var/lib/kubelet and %s: not a Kubernetes node", why)
	}
	c.mu.Lock()
	if c.absentSince.IsZero() {
		c.absentSince = now
	}
	since, started := c.absentSince, c.started
	c.failingSince = time.Time{}
	c.mu.Unlock()
	det := map[string]string{}
	if lease != nil && lease.Spec.RenewTime != nil {
		det["lease_renewed"] = lease.Spec.RenewTime.UTC().Format(time.RFC3339)
	}
	if started && now.Sub(since) < c.s.Grace {
		return []check.Finding{c.finding(check.SeverityOK, ReasonCheckPending,
			fmt.Sprintf("no kubelet process for %s: looking again before reporting (a restart takes less than %s)", now.Sub(since).Truncate(time.Second), c.s.Grace), det)}, nil
	}
	msg := "no kubelet process runs on this node"
	if started {
		msg += fmt.Sprintf(" (for %s)", now.Sub(since).Truncate(time.Second))
	}
	msg += ": pods here are neither started nor reported and the node will go NotReady; see systemctl status kubelet and journalctl -u kubelet"
	return []check.Finding{c.finding(check.SeverityProblem, ReasonNotRunning, msg, det)}, nil
}

// healthz asks the kubelet's /healthz; a finding when that is the answer.
func (c *healthCheck) healthz(ctx context.Context, now time.Time, p Process, det map[string]string) *check.Finding {
	addr, on, why := c.s.HealthzAddress, true, ""
	if addr == "" {
		addr, on, why = c.kubeletHealthzAddress(p)
	}
	if why != "" {
		det["healthz_address_from"] = why
	}
	if !on {
		det["healthz"] = "off (healthzPort 0)"
		return nil
	}
	url := "http://" + addr + "/healthz"
	det["healthz_url"] = url
	timeout := c.s.HealthzTimeout
	if dl, ok := ctx.Deadline(); ok {
		// Leave the rest of the run for the Lease and the report.
		timeout = min(timeout, time.Until(dl)*3/4)
	}
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	hz := c.d.Healthz
	if hz == nil {
		hz = HTTPHealthz{}
	}
	status, body, err := hz.Get(hctx, url)
	if err == nil && status == 200 {
		c.mu.Lock()
		c.failingSince = time.Time{}
		c.mu.Unlock()
		return nil
	}
	answer := fmt.Sprintf("HTTP %d", status)
	if body != "" {
		answer += " " + strings.Join(strings.Fields(body), " ")
	}
	if err != nil {
		answer = err.Error()
		if errors.Is(hctx.Err(), context.DeadlineExceeded) {
			answer = fmt.Sprintf("no answer within %s", timeout.Truncate(time.Millisecond))
		}
	}
	det["healthz_answer"] = answer
	up := now.Sub(p.Started)
	if up < c.s.Cooldown {
		f := c.finding(check.SeverityOK, ReasonStarting, fmt.Sprintf("the kubelet started %s ago and its healthz at %s does not answer yet (%s): waiting for it (cooldown %s)", up.Truncate(time.Second), url, answer, c.s.Cooldown), det)
		return &f
	}
	c.mu.Lock()
	if c.failingSince.IsZero() {
		c.failingSince = now
	}
	since, started := c.failingSince, c.started
	c.mu.Unlock()
	if started && now.Sub(since) < c.s.Grace {
		f := c.finding(check.SeverityOK, ReasonCheckPending, fmt.Sprintf("the kubelet's healthz at %s failed (%s): asking again before reporting", url, answer), det)
		return &f
	}
	f := c.finding(check.SeverityProblem, ReasonUnhealthy, fmt.Sprintf(
		"the kubelet (pid %d) is not healthy: %s answers %s: see journalctl -u kubelet, and the container runtime (crictl info)", p.PID, url, answer), det)
	return &f
}

// kubeletHealthzAddress reads the address from the kubelet's config file
// and flags; why says what it came from when that is not both.
func (c *healthCheck) kubeletHealthzAddress(p Process) (addr string, on bool, why string) {
	flags, err := ParseCmdline(p.Args)
	if err != nil {
		return DefaultHealthzAddress, true, "default (" + err.Error() + ")"
	}
	var file []byte
	if flags.Config != "" {
		if file, err = fs.ReadFile(c.d.FS, strings.TrimPrefix(flags.Config, "/")); err != nil {
			why = fmt.Sprintf("flags only: config file %s not readable here", flags.Config)
			file = nil
		}
	}
	addr, on, err = HealthzAddress(file, flags)
	if err != nil {
		return DefaultHealthzAddress, true, "default (" + err.Error() + ")"
	}
	return addr, on, why
}

// leaseStale reports a kubelet that runs but does not renew its Lease: it
// cannot reach the API server. A Lease that looks stale in the cache is
// read afresh first, since the agent's own watch may be what lags.
func (c *healthCheck) leaseStale(ctx context.Context, now time.Time, p Process, lease *coordinationv1.Lease, det map[string]string) *check.Finding {
	max := func(l *coordinationv1.Lease) time.Duration {
		if c.s.MaxLeaseAge > 0 {
			return c.s.MaxLeaseAge
		}
		if l.Spec.LeaseDurationSeconds != nil && *l.Spec.LeaseDurationSeconds > 0 {
			return time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second
		}
		return 40 * time.Second
	}
	stale := func(l *coordinationv1.Lease) bool {
		return l != nil && l.Spec.RenewTime != nil && now.Sub(l.Spec.RenewTime.Time) > max(l) && now.Sub(p.Started) > max(l)
	}
	if !stale(lease) {
		return nil
	}
	fresh, err := c.d.API.GetNodeLease(ctx)
	if err != nil || !stale(fresh) {
		// Unreadable: the agent cannot reach the API either, so the
		// kubelet's Lease says nothing of the kubelet.
		return nil
	}
	renewed := fresh.Spec.RenewTime.Time
	det["lease_renewed"] = renewed.UTC().Format(time.RFC3339)
	holder := ""
	if fresh.Spec.HolderIdentity != nil {
		holder = *fresh.Spec.HolderIdentity
	}
	f := c.finding(check.SeverityProblem, ReasonLeaseStale, fmt.Sprintf(
		"the kubelet runs and answers healthz but has not renewed the Lease %s/%s (holder %q) for %s (allowed %s): it cannot reach the API server and the node will go NotReady; see journalctl -u kubelet for API errors and the route to the API server",
		fresh.Namespace, fresh.Name, holder, now.Sub(renewed).Truncate(time.Second), max(fresh)), det)
	return &f
}

// pleg reports what the kubelet itself says of its pod lifecycle event
// generator in the Node's Ready condition. A kubelet within its cooldown
// says "PLEG is not healthy: pleg has yet to be successful" until its
// first relist: that is start-up, not a problem.
func (c *healthCheck) pleg(now time.Time, p Process) *check.Finding {
	if c.d.API == nil || now.Sub(p.Started) < c.s.Cooldown {
		return nil
	}
	n, err := c.d.API.Node()
	if err != nil || n == nil {
		return nil
	}
	for _, cond := range n.Status.Conditions {
		if cond.Type == corev1.NodeReady && cond.Status != corev1.ConditionTrue && strings.Contains(cond.Message, "PLEG is not healthy") {
			f := c.finding(check.SeverityProblem, ReasonPLEG, fmt.Sprintf(
				"the kubelet reports %q: it cannot list containers from the runtime in time; see the container runtime (crictl ps, journalctl -u containerd) and the node's load", cond.Message),
				map[string]string{"ready_reason": cond.Reason, "since": cond.LastTransitionTime.UTC().Format(time.RFC3339)})
			return &f
		}
	}
	return nil
}

func validHostPort(s string) bool {
	h, p, err := net.SplitHostPort(s)
	if err != nil || net.ParseIP(h) == nil {
		return false
	}
	n, err := strconv.Atoi(p)
	return err == nil && n > 0 && n < 65536
}

func (c *healthCheck) finding(sev check.Severity, reason, msg string, det map[string]string) check.Finding {
	if len(det) == 0 {
		det = nil
	}
	return check.Finding{Severity: sev, Condition: check.ConditionKubeletUnhealthy, Reason: reason, Message: msg, Details: det}
}
