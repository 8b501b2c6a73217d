package netcheck

import (
	"github.com/node-doctor/node-doctor/pkg/kubeproxy"

	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/node-doctor/node-doctor/pkg/check"
)

// KubeProxyRules compares kube-proxy's rules on this node with the Services
// and EndpointSlices in the API.
func KubeProxyRules(d kubeproxy.KubeProxyDeps) check.Definition {
	s := kubeproxy.DefaultKubeProxySettings()
	g := &graceTracker{first: map[string]time.Time{}}
	return check.Definition{
		Name:        "kube-proxy-rules",
		Area:        "network",
		Description: "kube-proxy's iptables/nftables/IPVS rules on this node match the Services and EndpointSlices in the API",
		Interval:    time.Minute,
		Timeout:     45 * time.Second,
		Conditions:  []string{check.ConditionKubeProxyRules},
		Settings:    s,
		Check:       newKubeProxyRulesCheck(d, s, g),
	}
}

// kubeProxyRulesCheck is the check plus the metrics of its last run.
type kubeProxyRulesCheck struct {
	d        kubeproxy.KubeProxyDeps
	s        *kubeproxy.KubeProxySettings
	g        *graceTracker
	ports    *prometheus.GaugeVec
	rules    *prometheus.GaugeVec
	duration prometheus.Gauge
	lag      *prometheus.GaugeVec
	unknown  prometheus.Gauge
}

func newKubeProxyRulesCheck(d kubeproxy.KubeProxyDeps, s *kubeproxy.KubeProxySettings, g *graceTracker) *kubeProxyRulesCheck {
	return &kubeProxyRulesCheck{d: d, s: s, g: g,
		ports: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "node_doctor_kubeproxy_service_ports",
			Help: "Service ports (per IP family) in the last verification of kube-proxy's rules, by mode and state (verified, broken, pending, no_endpoints, unverifiable)."}, []string{"mode", "state"}),
		rules: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "node_doctor_kubeproxy_rules",
			Help: "Rules (iptables), chain rules (nftables) or virtual servers (IPVS) of kube-proxy read in the last verification."}, []string{"mode"}),
		duration: prometheus.NewGauge(prometheus.GaugeOpts{Name: "node_doctor_kubeproxy_verification_duration_seconds",
			Help: "How long the last verification of kube-proxy's rules took (API read, rules read, parse, compare)."}),
		unknown: prometheus.NewGauge(prometheus.GaugeOpts{Name: "node_doctor_kubeproxy_unknown_rules",
			Help: "kube-proxy rules and map elements the netlink reader could not decode in the last verification; the service ports depending on them count as unverifiable."}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "node_doctor_kubeproxy_sync_lag_seconds",
			Help: "How far kube-proxy's last sync is behind its last queued change, as last seen (0 when in sync)."}, []string{"ip_family"}),
	}
}

// Run verifies the rules and records the metrics.
func (c *kubeProxyRulesCheck) Run(ctx context.Context) ([]check.Finding, error) {
	start := time.Now()
	fs, st, err := kubeProxyRulesRun(ctx, c.d, c.s, c.g)
	c.duration.Set(time.Since(start).Seconds())
	if st != nil {
		c.ports.Reset()
		for state, n := range map[string]int{"verified": st.verified, "broken": st.broken, "pending": st.pending, "no_endpoints": st.noEndpoints, "unverifiable": st.unverifiable} {
			c.ports.WithLabelValues(st.mode, state).Set(float64(n))
		}
		c.rules.Reset()
		c.rules.WithLabelValues(st.mode).Set(float64(st.rules))
		c.unknown.Set(float64(st.unknown))
		if st.sync != nil {
			for fam, q := range st.sync.LastQueued {
				c.lag.WithLabelValues(fam).Set(max(0, q.Sub(st.sync.LastSync[fam]).Seconds()))
			}
		}
	}
	return fs, err
}

// Describe implements prometheus.Collector.
func (c *kubeProxyRulesCheck) Describe(ch chan<- *prometheus.Desc) {
	c.ports.Describe(ch)
	c.rules.Describe(ch)
	c.duration.Describe(ch)
	c.lag.Describe(ch)
	c.unknown.Describe(ch)
}

// Collect implements prometheus.Collector.
func (c *kubeProxyRulesCheck) Collect(ch chan<- prometheus.Metric) {
	c.ports.Collect(ch)
	c.rules.Collect(ch)
	c.duration.Collect(ch)
	c.lag.Collect(ch)
	c.unknown.Collect(ch)
}

// runStats summarise one verification for the metrics.
type runStats struct {
	mode                                          string
	verified, broken, pending, noEndpoints, rules int
	unverifiable, unknown                         int
	sync                                          *kubeproxy.KubeProxySync
}

func kubeProxyRulesRun(ctx context.Context, d kubeproxy.KubeProxyDeps, s *kubeproxy.KubeProxySettings, g *graceTracker) ([]check.Finding, *runStats, error) {
	if d.Services == nil {
		return nil, nil, check.NotApplicable("no cluster access: node-doctor was given no kubeconfig and is not in a pod, so there are no Services to compare kube-proxy's rules with")
	}
	svcs, err := d.Services.Services()
	if err != nil {
		return nil, nil, check.NotApplicable("no cluster access (%v): the Services to compare kube-proxy's rules with cannot be read", err)
	}
	eps, err := d.Services.EndpointSlices()
	if err != nil {
		return nil, nil, check.NotApplicable("no cluster access (%v)", err)
	}
	kp := d.API(s)
	obs, err := kubeproxy.ReadProgrammed(ctx, d, s, kp)
	if err != nil {
		return nil, nil, err
	}
	// The zone label drives topology hints; an unknown node means no zone.
	node, _ := d.Services.Node()
	desired := kubeproxy.DesiredServicePortsOn(svcs, eps, kubeproxy.NodeTopologyOf(d.Services.NodeName(), node))
	var sync *kubeproxy.KubeProxySync
	if ks, err := kp.Sync(ctx); err == nil {
		sync = &ks
	}
	// Judged as of the read: a shared snapshot may be a few seconds old,
	// and kube-proxy may have synced since.
	now := d.Now()
	if !obs.ReadAt.IsZero() && obs.ReadAt.Before(now) {
		now = obs.ReadAt
	}
	var all []kubeproxy.Discrepancy
	verified, noEP := 0, 0
	rules, unverifiable, unknown, example := 0, 0, 0, ""
	for _, v6 := range []bool{false, true} {
		p := obs.Progs[v6]
		var fam []kubeproxy.DesiredPort
		for _, dp := range desired {
			if dp.IPv6 == v6 {
				fam = append(fam, dp)
			}
		}
		if p == nil {
			continue
		}
		rules += p.Rules
		disc, v, n := kubeproxy.Compare(fam, p)
		disc, v = kubeproxy.CompareIPVSNode(fam, v6, obs.IPVS, node, disc, v)
		for i := range disc {
			disc[i].IPv6 = v6
			if disc[i].Unverifiable != "" {
				unverifiable++
				continue
			}
			all = append(all, disc[i])
		}
		unknown += p.Unknown
		if example == "" {
			example = p.UnknownExample
		}
		verified += v
		noEP += n
	}
	counted, pending := g.filter(all, now, s, sync)
	var out []check.Finding
	for i, dc := range counted {
		if i == s.MaxFindings {
			f := finding(check.SeverityProblem, "MoreRuleDifferences", fmt.Sprintf("%d more differences between kube-proxy's %s rules and the API on this node (showing %d)", len(counted)-i, obs.Mode, s.MaxFindings))
			f.Condition = check.ConditionKubeProxyRules
			out = append(out, f)
			break
		}
		out = append(out, discrepancyFinding(dc, obs.Mode))
	}
	broken := map[string]bool{}
	for _, dc := range counted {
		broken[dc.Service.String()+"/"+dc.Service.Protocol] = true
	}
	// One summary finding every run: the counts the report's services
	// section shows (details service_ports_*), ok or not.
	msg := fmt.Sprintf("kube-proxy's %s rules on this node match the API for %d service ports (%d more have no endpoints anywhere)", obs.Mode, verified, noEP)
	reason := "RulesMatchAPI"
	if len(counted) > 0 {
		reason = "ServicePortsVerified"
		msg = fmt.Sprintf("%d service ports verified, %d broken on this node (%s mode, %d more have no endpoints anywhere)", verified, len(broken), obs.Mode, noEP)
	}
	if unverifiable > 0 {
		msg += fmt.Sprintf("; %d could not be verified: %d rules or map elements on their path were not decoded by the netlink reader", unverifiable, unknown)
	}
	if pending > 0 {
		msg += fmt.Sprintf("; %d differences are younger than kube-proxy's sync and not counted yet", pending)
	}
	f := finding(check.SeverityOK, reason, msg)
	f.Condition = check.ConditionKubeProxyRules
	f.Details = map[string]string{"mode": obs.Mode, "verified": fmt.Sprint(verified), "no_endpoints": fmt.Sprint(noEP),
		"pending": fmt.Sprint(pending), "rules": fmt.Sprint(rules),
		"service_ports_verified": fmt.Sprint(verified), "service_ports_broken": fmt.Sprint(len(broken)),
		"service_ports_pending": fmt.Sprint(pending), "service_ports_no_endpoints": fmt.Sprint(noEP)}
	if obs.Backend != "" {
		f.Details["iptables_backend"] = obs.Backend
	}
	if unknown > 0 {
		f.Details["unknown_rules"], f.Details["service_ports_unverifiable"] = fmt.Sprint(unknown), fmt.Sprint(unverifiable)
		w := finding(check.SeverityWarning, "RulesNotUnderstood", fmt.Sprintf("the netlink reader could not decode %d of kube-proxy's rules or map elements (e.g. %s); "+
			"%d service ports that depend on them were not compared; set dataplane.reader: exec to compare them through nft or iptables-save", unknown, example, unverifiable))
		w.Condition = check.ConditionKubeProxyRules
		w.Details = map[string]string{"unknown_rules": fmt.Sprint(unknown), "example": example, "service_ports_unverifiable": fmt.Sprint(unverifiable)}
		out = append(out, f, w)
	} else {
		out = append(out, f)
	}
	if obs.KPErr != nil && s.Mode == "" {
		f := finding(check.SeverityWarning, "KubeProxyModeUnknown", fmt.Sprintf("kube-proxy did not answer /proxyMode on %s (%v); compared the %s rules found on the node", s.MetricsAddress, obs.KPErr, obs.Mode))
		f.Condition = check.ConditionKubeProxyRules
		out = append(out, f)
	}
	return out, &runStats{mode: obs.Mode, verified: verified, broken: len(broken), pending: pending, noEndpoints: noEP, rules: rules, sync: sync,
		unverifiable: unverifiable, unknown: unknown}, nil
}

func discrepancyFinding(dc kubeproxy.Discrepancy, mode string) check.Finding {
	fam := "IPv4"
	if dc.IPv6 {
		fam = "IPv6"
	}
	what := fam
	if dc.Service.Protocol != "" {
		what = strings.ToUpper(dc.Service.Protocol) + ", " + fam
	}
	const fix = "check kube-proxy's log on this node for sync errors, then restart kube-proxy here to rewrite its rules"
	f := finding(check.SeverityProblem, dc.Reason, fmt.Sprintf("%s (%s, %s): %s; expected %s, found %s; fix: %s",
		dc.Service, what, mode, dc.Message, dc.Expected, dc.Actual, fix))
	f.Condition = check.ConditionKubeProxyRules
	f.Object = check.Object{Kind: check.KindService, Namespace: dc.Service.Namespace, Name: dc.Service.Name}
	f.Details = map[string]string{"service_port": dc.Service.String(), "expected": dc.Expected, "actual": dc.Actual, "mode": mode, "ip_family": fam,
		"protocol": strings.ToUpper(dc.Service.Protocol), "why": dc.Message, "fix": fix}
	return f
}

// graceTracker remembers when each difference was first seen, across runs.
type graceTracker struct {
	mu    sync.Mutex
	first map[string]time.Time
}

// filter returns the differences that count now and how many are pending.
// One counts when seen for Grace, or at once when kube-proxy has applied
// every change it queued, its last change is Settle old, and the service
// did not change in the API for Settle either.
func (g *graceTracker) filter(all []kubeproxy.Discrepancy, now time.Time, s *kubeproxy.KubeProxySettings, sync *kubeproxy.KubeProxySync) ([]kubeproxy.Discrepancy, int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	seen := map[string]time.Time{}
	var out []kubeproxy.Discrepancy
	pending := 0
	for _, dc := range all {
		first, ok := g.first[dc.Key]
		if !ok {
			first = now
		}
		seen[dc.Key] = first
		if now.Sub(first) >= s.Grace || settled(dc, now, s.Settle, sync) {
			out = append(out, dc)
			continue
		}
		pending++
	}
	g.first = seen
	return out, pending
}

func settled(dc kubeproxy.Discrepancy, now time.Time, settle time.Duration, sync *kubeproxy.KubeProxySync) bool {
	if sync == nil {
		return false
	}
	fam := "IPv4"
	if dc.IPv6 {
		fam = "IPv6"
	}
	last, queued := sync.LastSync[fam], sync.LastQueued[fam]
	if last.IsZero() || last.Before(queued) {
		return false // kube-proxy has changes it has not written yet
	}
	return now.Sub(queued) >= settle && now.Sub(last) >= 0 && now.Sub(dc.Changed) >= settle
}
