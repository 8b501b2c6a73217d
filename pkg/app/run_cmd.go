package app

import (
	"errors"
	"net/http"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/node-doctor/node-doctor/pkg/check"
	"github.com/node-doctor/node-doctor/pkg/config"
	"github.com/node-doctor/node-doctor/pkg/metrics"
	"github.com/node-doctor/node-doctor/pkg/server"
	"github.com/node-doctor/node-doctor/pkg/version"
)

var timeNow = time.Now

func newRunCommand(g *globals) *cobra.Command {
	var metricsAddr string
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the agent: checks on their intervals, metrics and probes over HTTP",
		Long: `Run every enabled check on its interval (each with its own timeout, so one
hung check never holds up the others) and serve:

  /metrics   Prometheus metrics (node_doctor_*)
  /healthz   200 while checks keep completing; 503 when one is hung or stalled
  /readyz    200 once every check has completed at least once

Stops cleanly on SIGINT or SIGTERM.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := g.setup(cmd.Flags(), cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			v, rev := version.Get()
			s.log.Info("starting node-doctor", "version", v, "revision", rev, "checks", len(s.defs), "host_root", s.cfg.HostRoot)
			m := metrics.New(s.defs)
			m.Registry.MustRegister(s.criMetrics)
			runner := check.NewRunner(s.defs, nil, s.log, m)
			srv, err := server.Listen(s.cfg.MetricsAddress, m.Registry, runner.Healthy, runner.Ready, s.log)
			if err != nil {
				return &exitError{ExitFailure, err}
			}
			eg, ctx := errgroup.WithContext(cmd.Context())
			eg.Go(func() error { return runner.Run(ctx) })
			eg.Go(func() error { return srv.Serve(ctx) })
			if err := eg.Wait(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return &exitError{ExitFailure, err}
			}
			s.log.Info("stopped")
			return nil
		},
	}
	cmd.Flags().StringVar(&metricsAddr, "metrics-address", config.DefaultMetricsAddress, "address to serve /metrics, /healthz and /readyz on")
	return cmd
}
