package netcheck

import (
	"github.com/node-doctor/node-doctor/pkg/kubeproxy"

	"context"
	"fmt"
	"sync"
	"time"

	"github.com/node-doctor/node-doctor/pkg/check"
)

// KubeProxyHealthSettings tune the kube-proxy health check.
type KubeProxyHealthSettings struct {
	MetricsAddress string `yaml:"metricsAddress"`
	HealthAddress  string `yaml:"healthAddress"`
	// MaxSyncLag: how long kube-proxy may leave a queued change unwritten.
	MaxSyncLag time.Duration `yaml:"maxSyncLag"`
}

// Validate range-checks the settings.
func (s *KubeProxyHealthSettings) Validate() error {
	if s.MaxSyncLag < 5*time.Second || s.MaxSyncLag > time.Hour {
		return fmt.Errorf("maxSyncLag %s is not between 5s and 1h", s.MaxSyncLag)
	}
	if s.MetricsAddress == "" || s.HealthAddress == "" {
		return fmt.Errorf("metricsAddress and healthAddress must be set")
	}
	return nil
}

// KubeProxyHealth asks kube-proxy how it is: /healthz, and from its metrics
// how far its last sync is behind its last queued change, and whether its
// rule writes fail.
func KubeProxyHealth(d kubeproxy.KubeProxyDeps) check.Definition {
	s := &KubeProxyHealthSettings{MetricsAddress: "127.0.0.1:10249", HealthAddress: "127.0.0.1:10256", MaxSyncLag: time.Minute}
	var mu sync.Mutex
	prevFailures := -1.0
	return check.Definition{
		Name:        "kube-proxy-health",
		Area:        "network",
		Description: "kube-proxy answers /healthz, keeps its rules in sync with what it is told, and its rule writes succeed",
		Interval:    30 * time.Second,
		Timeout:     10 * time.Second,
		Conditions:  []string{check.ConditionKubeProxyRules},
		Settings:    s,
		Check: check.Func(func(ctx context.Context) ([]check.Finding, error) {
			kp := d.KubeProxy
			if kp == nil {
				kp = kubeproxy.KubeProxyHTTP{MetricsURL: "http://" + s.MetricsAddress, HealthURL: "http://" + s.HealthAddress}
			}
			h, herr := kp.Healthz(ctx)
			sync, serr := kp.Sync(ctx)
			if herr != nil && serr != nil {
				obs := &kubeproxy.Observed{Progs: map[bool]*kubeproxy.Programmed{}}
				snap := d.Snapshot()
				if err := kubeproxy.ReadNFT(ctx, snap, obs); err != nil {
					return nil, err
				}
				found, err := kubeproxy.ReadIPT(ctx, snap, obs)
				if err != nil {
					return nil, err
				}
				if !found && obs.Progs[false] == nil && obs.Progs[true] == nil {
					return nil, check.NotApplicable("kube-proxy is not running on this node (nothing answers on %s or %s) and no kube-proxy rules are programmed", s.HealthAddress, s.MetricsAddress)
				}
				f := finding(check.SeverityProblem, "KubeProxyNotRunning", fmt.Sprintf("kube-proxy's rules are programmed but kube-proxy does not answer on %s (%v): Service changes no longer reach this node; check the kube-proxy pod on this node", s.HealthAddress, herr))
				f.Condition = check.ConditionKubeProxyRules
				return []check.Finding{f}, nil
			}
			now := d.Now()
			var out []check.Finding
			add := func(sev check.Severity, reason, msg string, det map[string]string) {
				f := finding(sev, reason, msg)
				f.Condition, f.Details = check.ConditionKubeProxyRules, det
				out = append(out, f)
			}
			if herr == nil && !h.Healthy {
				add(check.SeverityProblem, "KubeProxyUnhealthy", fmt.Sprintf("kube-proxy /healthz says unhealthy (HTTP %d, last successful update %s ago): it is failing to write rules; check its log on this node", h.StatusCode, ago(now, h.LastUpdated)),
					map[string]string{"status_code": fmt.Sprint(h.StatusCode), "last_updated": h.LastUpdated.Format(time.RFC3339)})
			}
			if serr == nil {
				for fam, queued := range sync.LastQueued {
					last := sync.LastSync[fam]
					if queued.After(last) && now.Sub(queued) > s.MaxSyncLag {
						add(check.SeverityProblem, "KubeProxySyncStalled", fmt.Sprintf("kube-proxy (%s) has not written a change queued %s ago (last sync %s ago): Services on this node are out of date; check its log", fam, ago(now, queued), ago(now, last)),
							map[string]string{"ip_family": fam, "last_queued": queued.Format(time.RFC3339), "last_sync": last.Format(time.RFC3339)})
					}
				}
				mu.Lock()
				prev := prevFailures
				prevFailures = sync.RestoreFailures
				mu.Unlock()
				if prev >= 0 && sync.RestoreFailures > prev {
					add(check.SeverityWarning, "KubeProxyRestoreFailures", fmt.Sprintf("kube-proxy failed to write its rules %g times since the last run; check its log", sync.RestoreFailures-prev), nil)
				}
			}
			if len(out) == 0 {
				msg := "kube-proxy is healthy"
				if serr == nil {
					if last, ok := sync.LastSync["IPv4"]; ok {
						msg += fmt.Sprintf(" and in sync (last IPv4 sync %s ago)", ago(now, last))
					}
				}
				add(check.SeverityOK, "KubeProxyHealthy", msg, nil)
			}
			return out, nil
		}),
	}
}

func ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return now.Sub(t).Truncate(time.Second).String()
}
