package app

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"slices"
	"time"

	"github.com/node-doctor/node-doctor/pkg/check"
	"github.com/node-doctor/node-doctor/pkg/config"
	"github.com/node-doctor/node-doctor/pkg/metrics"
)

// reloader re-reads the config file on SIGHUP and when its content
// changes, and applies what can change while the agent runs. A config that
// does not load leaves the one in force.
type reloader struct {
	g       *globals
	rf      *runFlags
	s       *setup // in force
	m       *metrics.Reporter
	runner  *check.Runner
	kube    *kubeParts // nil without reporting to Kubernetes
	lastSum [sha256.Size]byte
}

func newReloader(g *globals, rf *runFlags, s *setup, m *metrics.Reporter, runner *check.Runner, k *kubeParts) *reloader {
	r := &reloader{g: g, rf: rf, s: s, m: m, runner: runner, kube: k}
	if g.configFile != "" {
		r.lastSum, _ = fileSum(g.configFile)
	}
	return r
}

// run reloads on every value from hup and, every poll (0: never), when the
// file's content has changed. The file is polled rather than watched: a
// ConfigMap volume swaps a symlink (..data) over a directory, which a read
// through the path follows for free, while an inotify watch has to follow
// the swap and costs a watch from the node's per-user limit.
func (r *reloader) run(ctx context.Context, hup <-chan os.Signal, poll time.Duration) error {
	var tick <-chan time.Time
	if poll > 0 && r.g.configFile != "" {
		t := time.NewTicker(poll)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
			if r.g.configFile == "" {
				r.s.log.Info("SIGHUP: no config file to reload (no --config)")
				continue
			}
			r.reload(ctx, "SIGHUP")
		case <-tick:
			sum, err := fileSum(r.g.configFile)
			if err != nil || sum == r.lastSum {
				continue // a file that cannot be read is reported on SIGHUP
			}
			r.reload(ctx, "config file changed")
		}
	}
}

func fileSum(path string) ([sha256.Size]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return [sha256.Size]byte{}, err
	}
	return sha256.Sum256(b), nil
}

func (r *reloader) reload(ctx context.Context, why string) {
	log := r.s.log.With("file", r.g.configFile, "trigger", why)
	// A file that fails is not retried until it changes again.
	r.lastSum, _ = fileSum(r.g.configFile)
	if err := r.apply(ctx, log); err != nil {
		r.m.ConfigReloaded(false)
		log.Error("config reload failed; the running config stays in force", "err", err)
		return
	}
	r.m.ConfigReloaded(true)
}

// restartOnly are the settings read once at start.
var restartOnly = []struct {
	key string
	get func(*config.Config) any
	set func(dst, src *config.Config)
}{
	{"hostRoot", func(c *config.Config) any { return c.HostRoot }, func(d, s *config.Config) { d.HostRoot = s.HostRoot }},
	{"metricsAddress", func(c *config.Config) any { return c.MetricsAddress }, func(d, s *config.Config) { d.MetricsAddress = s.MetricsAddress }},
	{"metricsSecure", func(c *config.Config) any { return c.MetricsSecure }, func(d, s *config.Config) { d.MetricsSecure = s.MetricsSecure }},
	{"healthAddress", func(c *config.Config) any { return c.HealthAddress }, func(d, s *config.Config) { d.HealthAddress = s.HealthAddress }},
	{"metricsCertFile", func(c *config.Config) any { return c.MetricsCertFile }, func(d, s *config.Config) { d.MetricsCertFile = s.MetricsCertFile }},
	{"metricsKeyFile", func(c *config.Config) any { return c.MetricsKeyFile }, func(d, s *config.Config) { d.MetricsKeyFile = s.MetricsKeyFile }},
	{"logFormat", func(c *config.Config) any { return c.LogFormat }, func(d, s *config.Config) { d.LogFormat = s.LogFormat }},
	{"kubeconfig", func(c *config.Config) any { return c.Kubeconfig }, func(d, s *config.Config) { d.Kubeconfig = s.Kubeconfig }},
	{"nodeName", func(c *config.Config) any { return c.NodeName }, func(d, s *config.Config) { d.NodeName = s.NodeName }},
	{"conditionHeartbeat", func(c *config.Config) any { return c.ConditionHeartbeat }, func(d, s *config.Config) { d.ConditionHeartbeat = s.ConditionHeartbeat }},
	{"dataplane.reader", func(c *config.Config) any { return c.DataplaneReader }, func(d, s *config.Config) { d.DataplaneReader = s.DataplaneReader }},
}

func (r *reloader) apply(ctx context.Context, log *slog.Logger) error {
	file, cfg, err := r.g.loadConfig(r.rf)
	if err != nil {
		return err
	}
	old := r.s
	var pending []string
	for _, f := range restartOnly {
		if f.get(&cfg) != f.get(&old.cfg) {
			pending = append(pending, f.key)
			f.set(&cfg, &old.cfg)
		}
	}
	if len(pending) > 0 {
		log.Warn("config change needs a restart; not applied", "keys", pending)
	}
	ns := &setup{cfg: cfg, file: file, deps: old.deps, log: old.log, level: old.level,
		criMetrics: old.criMetrics, dataplaneMetrics: old.dataplaneMetrics, criClient: old.criClient, criSource: old.criSource, informers: old.informers,
		hostFS: old.hostFS, noKube: old.noKube}
	if err := r.g.buildChecks(ns, r.rf); err != nil {
		return err
	}
	changed := keepUnchanged(old, ns)
	// The new level first, so the first runs of the new checks log at it.
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(cfg.LogLevel)) // validated
	prev := old.level.Level()
	old.level.Set(lvl)
	if err := r.runner.Swap(ctx, ns.defs); err != nil {
		old.level.Set(prev)
		return err
	}
	if err := r.m.SwapCheckCollectors(old.defs, ns.defs); err != nil {
		log.Warn("check metrics after reload", "err", err)
	}
	r.m.Reconfigure(ns.defs)
	if r.kube != nil {
		r.kube.conditions.Reconfigure(ns.all, ns.defs)
	}
	r.s = ns
	log.Info("config reloaded", "checks", len(ns.defs), "changed", changed, "log_level", cfg.LogLevel)
	return nil
}

// keepUnchanged puts the running definition in place of each new one that
// is the same (interval, timeout, settings), so unchanged checks keep
// running undisturbed, and lists the checks that start, stop or change.
func keepUnchanged(old, ns *setup) []string {
	byName := map[string]*check.Definition{}
	for _, d := range old.all {
		byName[d.Name] = d
	}
	for i, d := range ns.all {
		if o := byName[d.Name]; o != nil && o.Interval == d.Interval && o.Timeout == d.Timeout && reflect.DeepEqual(o.Settings, d.Settings) {
			if j := slices.Index(ns.defs, d); j >= 0 {
				ns.defs[j] = o
			}
			ns.all[i] = o
		}
	}
	var changed []string
	for _, d := range ns.defs {
		if !slices.Contains(old.defs, d) {
			changed = append(changed, d.Name)
		}
	}
	for _, d := range old.defs {
		if !slices.ContainsFunc(ns.defs, func(n *check.Definition) bool { return n.Name == d.Name }) {
			changed = append(changed, fmt.Sprintf("%s (stopped)", d.Name))
		}
	}
	return changed
}
