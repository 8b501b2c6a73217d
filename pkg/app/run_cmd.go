package app

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/rest"

	"github.com/node-doctor/node-doctor/pkg/check"
	"github.com/node-doctor/node-doctor/pkg/config"
	"github.com/node-doctor/node-doctor/pkg/kube"
	"github.com/node-doctor/node-doctor/pkg/kube/kubeapi"
	"github.com/node-doctor/node-doctor/pkg/metrics"
	"github.com/node-doctor/node-doctor/pkg/server"
	"github.com/node-doctor/node-doctor/pkg/version"
)

var timeNow = time.Now

// kubeFlags are the run command's Kubernetes reporting flags.
type kubeFlags struct {
	qps        float32
	burst      int
	eventsQPS  float64
	eventsLogs bool
}

// runFlags are the run command's flags.
type runFlags struct {
	// Flags given win over the config file.
	metricsAddress, kubeconfig, nodeName optString
	heartbeat                            optDuration
	metricsSecure                        optBool
	healthAddress, certFile, keyFile     optString
	kube                                 kubeFlags
	npd                                  npdFlags
	// configPoll is how often the config file is read for changes.
	configPoll time.Duration
	profiling  bool
}

func (f *runFlags) override(c *config.Config) error {
	f.metricsAddress.to(&c.MetricsAddress)
	f.metricsSecure.to(&c.MetricsSecure)
	f.healthAddress.to(&c.HealthAddress)
	f.certFile.to(&c.MetricsCertFile)
	f.keyFile.to(&c.MetricsKeyFile)
	f.kubeconfig.to(&c.Kubeconfig)
	f.nodeName.to(&c.NodeName)
	f.heartbeat.to(&c.ConditionHeartbeat)
	return f.npd.override(c, f)
}

func (f *runFlags) addToChecks(s *setup) error { return f.npd.addToChecks(s) }

func newRunCommand(g *globals) *cobra.Command {
	var rf runFlags
	kf, npd := &rf.kube, &rf.npd
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the agent: checks on their intervals, metrics and probes over HTTP, node conditions and Events",
		Long: `Run every enabled check on its interval (each with its own timeout, so one
hung check never holds up the others) and serve:

  /metrics   Prometheus metrics (node_doctor_*)
  /healthz   200 while checks keep completing; 503 when one is hung or stalled
  /readyz    200 once every check has completed at least once

With --metrics-secure, /metrics is HTTPS and answers only callers whose
bearer token the API server accepts (TokenReview) and who may get the
non-resource URL /metrics (SubjectAccessReview: 401 and 403 otherwise);
the probes are then plain HTTP on --health-address.

With a cluster (--kubeconfig, or in-cluster config in a pod), findings also
become the node conditions node-doctor owns and Events on the Node or Pod.
Without one, reporting to Kubernetes is off (said once in the log).

With --config, the file is read again on SIGHUP and when its content
changes (checked every --config-poll-interval; a ConfigMap update is seen
within that of the kubelet's writing it): check settings, intervals, which
checks are enabled and the log level apply at once; a file that does not
load is logged and the running config stays. Settings read once at start
(hostRoot, metricsAddress, kubeconfig, ...) need a restart.

Stops cleanly on SIGINT or SIGTERM.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// From the start: SIGHUP's default would end the process.
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			if rf.configPoll < 0 {
				return &exitError{ExitFailure, fmt.Errorf("--config-poll-interval %s must not be negative", rf.configPoll)}
			}
			s, err := g.setup(&rf, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			s.noKube = npd.noKube()
			v, rev := version.Get()
			s.log.Info("starting node-doctor", "version", v, "revision", rev, "checks", len(s.defs), "host_root", s.cfg.HostRoot)
			m := metrics.New(s.defs)
			if err := m.RegisterCheckCollectors(s.defs, s.criMetrics, s.dataplaneMetrics); err != nil {
				return &exitError{ExitFailure, err}
			}
			reporters := []check.Reporter{m}
			k, err := kubeReporters(s, *kf, m)
			if err != nil {
				return &exitError{ExitFailure, err}
			}
			if k != nil {
				reporters = append(reporters, k.conditions, k.events)
			}
			runner := check.NewRunner(s.defs, nil, s.log, reporters...)
			so := server.Options{MetricsAddress: s.cfg.MetricsAddress, Secure: s.cfg.MetricsSecure, HealthAddress: s.cfg.HealthAddress,
				TLSCertFile: s.cfg.MetricsCertFile, TLSKeyFile: s.cfg.MetricsKeyFile, Profiling: rf.profiling}
			if so.Secure && so.HealthAddress == "" {
				so.HealthAddress = config.DefaultHealthAddress
			}
			if k != nil {
				so.Reviewer = k.reviewer
			}
			srv, err := server.Listen(so, m.Registry, runner.Healthy, runner.Ready, s.log)
			if err != nil {
				return &exitError{ExitFailure, err}
			}
			eg, ctx := errgroup.WithContext(cmd.Context())
			eg.Go(func() error {
				// Until the first list, the checks that compare with the API are not applicable.
				if err := s.informers.Start(ctx, 2*time.Minute); err != nil {
					s.log.Warn("kubernetes informers not synced", "err", err)
				}
				return nil
			})
			eg.Go(func() error { return runner.Run(ctx) })
			eg.Go(func() error { return newReloader(g, &rf, s, m, runner, k).run(ctx, hup, rf.configPoll) })
			eg.Go(func() error { return srv.Serve(ctx) })
			if k != nil {
				eg.Go(func() error { return k.conditions.Run(ctx) })
				eg.Go(func() error { return k.events.Run(ctx) })
			}
			if err := eg.Wait(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return &exitError{ExitFailure, err}
			}
			s.log.Info("stopped")
			return nil
		},
	}
	f := cmd.Flags()
	stringFlag(f, &rf.metricsAddress, "metrics-address", config.DefaultMetricsAddress, "address to serve /metrics on (and /healthz, /readyz when not --metrics-secure and no --health-address)")
	boolFlag(f, &rf.metricsSecure, "metrics-secure", false, "serve /metrics over HTTPS to callers the API server authenticates and authorizes for get on /metrics (needs a cluster; the DaemonSet sets it)")
	stringFlag(f, &rf.healthAddress, "health-address", "", "address to serve /healthz and /readyz on, plain HTTP (default: with /metrics; "+config.DefaultHealthAddress+" with --metrics-secure)")
	stringFlag(f, &rf.certFile, "metrics-cert-file", "", "PEM serving certificate for --metrics-secure, read again when it changes (default: self-signed, made in memory at start)")
	stringFlag(f, &rf.keyFile, "metrics-key-file", "", "PEM private key of --metrics-cert-file")
	stringFlag(f, &rf.kubeconfig, "kubeconfig", "", "kubeconfig to report node conditions and Events with (default: in-cluster config when in a pod; none: no reporting)")
	stringFlag(f, &rf.nodeName, "node-name", "", "this node's name in Kubernetes (default: $NODE_NAME, then the hostname)")
	durationFlag(f, &rf.heartbeat, "condition-heartbeat", 5*time.Minute, "how often unchanged node conditions are rewritten (10s to 1h)")
	f.BoolVar(&rf.profiling, "profiling", false, "serve Go's profiles on --metrics-address at /debug/pprof/ (profile?seconds=N for CPU, heap, allocs, goroutine: go tool pprof reads them); with --metrics-secure only to callers allowed to get that path")
	f.DurationVar(&rf.configPoll, "config-poll-interval", 5*time.Second, "how often the --config file is read for changes, which are then applied (0: only on SIGHUP)")
	f.Float32Var(&kf.qps, "kube-api-qps", 5, "queries per second to the Kubernetes API server")
	f.IntVar(&kf.burst, "kube-api-burst", 10, "burst of queries to the Kubernetes API server")
	f.Float64Var(&kf.eventsQPS, "events-qps", 1, "Events written per second at most (burst 20); more wait in a bounded queue")
	npd.register(f)
	f.BoolVar(&kf.eventsLogs, "events-include-logs", false, "copy what containers logged (last log line, termination message; cut to 256 bytes) into Events; off because more people can read Events than pod logs")
	return cmd
}

type kubeParts struct {
	conditions *kube.Conditions
	events     *kube.Events
	reviewer   server.Reviewer
}

// kubeReporters builds the condition and event reporters, or returns nil
// when no cluster is configured.
func kubeReporters(s *setup, kf kubeFlags, m *metrics.Reporter) (*kubeParts, error) {
	if s.noKube != nil {
		s.log.Info("reporting to Kubernetes is off", "why", s.noKube.Error())
		s.informers.Disconnected(s.noKube)
		return nil, nil
	}
	km := kube.NewMetrics()
	cl, err := kube.Connect(kube.ConnectOptions{
		ClientOptions: kube.ClientOptions{Kubeconfig: s.cfg.Kubeconfig, QPS: kf.qps, Burst: kf.burst, UserAgent: "node-doctor/" + versionString()},
		NodeName:      s.cfg.NodeName,
		Metrics:       km,
		Informers:     s.informers,
	})
	if errors.Is(err, kube.ErrNoCluster) {
		s.log.Info("reporting to Kubernetes is off", "why", err.Error())
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if err := km.Register(m.Registry); err != nil {
		return nil, fmt.Errorf("kube: metrics: %w", err)
	}
	node, rc, cs := cl.Node, cl.Config, cl.Client
	api := kube.API{Client: cs}
	log := s.log.With(slog.String("node", node))
	s.log.Info("reporting to Kubernetes", "node", node, "api_server", rc.Host)
	// Reviews get their own client and rate limit: requests with made-up
	// tokens must not hold up condition and Event writes.
	rrc := rest.CopyConfig(rc)
	rrc.QPS, rrc.Burst = 5, 10
	rcs, err := kubeapi.NewClientset(rrc)
	if err != nil {
		return nil, fmt.Errorf("kube: review client: %w", err)
	}
	return &kubeParts{
		reviewer: server.KubeReviewer{Client: rcs},
		conditions: kube.NewConditions(api, kube.ConditionOptions{
			Node: node, All: s.all, Enabled: s.defs, Heartbeat: s.cfg.ConditionHeartbeat, Log: log, Metrics: km,
		}),
		events: kube.NewEvents(api, kube.EventOptions{Node: node, QPS: kf.eventsQPS, IncludeLogs: kf.eventsLogs, Log: log, Metrics: km}),
	}, nil
}

func versionString() string {
	v, _ := version.Get()
	return v
}
