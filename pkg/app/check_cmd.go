package app

import (
	"context"
	"errors"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/node-doctor/node-doctor/pkg/check"
	"github.com/node-doctor/node-doctor/pkg/config"
	"github.com/node-doctor/node-doctor/pkg/kube"
	"github.com/node-doctor/node-doctor/pkg/report"
	"github.com/node-doctor/node-doctor/pkg/version"
)

// checkFlags are the check command's flags that override the config file.
type checkFlags struct {
	kubeconfig, nodeName optString
}

func (f *checkFlags) override(c *config.Config) error {
	f.kubeconfig.to(&c.Kubeconfig)
	f.nodeName.to(&c.NodeName)
	return nil
}

func (f *checkFlags) addToChecks(*setup) error { return nil }

func newCheckCommand(g *globals) *cobra.Command {
	var cf checkFlags
	var output, color string
	var verbose, list bool
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Run every enabled check once and print a report",
		Long: `Run every enabled check once, concurrently, each with its own timeout, and
print what is wrong on this node and how to fix it. Only reads; changes nothing.

Exit code: 0 healthy, 1 a problem was found or a check could not run,
2 node-doctor itself failed (bad flags or config).`,
		Example: `  node-doctor check
  node-doctor check -o json | jq '.results[] | select(.status != "ok")'
  node-doctor check --only hairpin,ip-forward --verbose
  node-doctor check --host-root /host     # in a pod with the host mounted at /host`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, color); err != nil {
				return &exitError{ExitFailure, err}
			}
			s, err := g.setup(&cf, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if list {
				return listChecks(cmd, s.defs)
			}
			// The node the checks read in the API is the one the report names.
			node, nodeErr := kube.NodeName(s.cfg.NodeName, os.Getenv, os.Hostname)
			stop := connectOnce(cmd.Context(), s)
			results := check.NewRunner(s.defs, nil, nil).RunOnce(cmd.Context())
			stop()
			if nodeErr != nil {
				node = "(unknown)"
			}
			v, _ := version.Get()
			rep := report.New(node, v, timeNow(), results)
			rep.Services = report.ServicesSection(results, serviceChecks...)
			out := cmd.OutOrStdout()
			switch output {
			case "json":
				err = report.WriteJSON(out, rep)
			case "yaml":
				err = report.WriteYAML(out, rep)
			default:
				err = report.WriteTable(out, rep, report.TableOptions{Color: useColor(color, out), Verbose: verbose})
			}
			if err != nil {
				return &exitError{ExitFailure, fmt.Errorf("write report: %w", err)}
			}
			if !rep.Healthy() {
				return &exitError{ExitProblems, nil}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&output, "output", "o", "table", "output format: table, json or yaml")
	f.StringVar(&color, "color", "auto", "colour the table: auto (only on a terminal, and not when NO_COLOR is set), always or never")
	f.BoolVarP(&verbose, "verbose", "v", false, "show every finding with its details, healthy ones too, and each check of an area that does not apply as a whole (one row without it)")
	f.BoolVar(&list, "list", false, "list the checks that would run, and exit")
	stringFlag(f, &cf.kubeconfig, "kubeconfig", "", "kubeconfig to read Services, EndpointSlices, this Node and its Pods with, only reading (default: in-cluster config when in a pod; none: the checks that compare with the API do not apply)")
	stringFlag(f, &cf.nodeName, "node-name", "", "this node's name in Kubernetes, the Node the data-plane checks read and the report names (default: $NODE_NAME, then the hostname)")
	return cmd
}

// serviceChecks verify service ports; the report's services section says
// why when they did not.
var serviceChecks = []string{"kube-proxy-rules"}

func useColor(mode string, w any) bool {
	switch mode {
	case "always":
		return true
	case "never":
		return false
	}
	if os.Getenv("NO_COLOR") != "" {
		return false
	}
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func listChecks(cmd *cobra.Command, defs []*check.Definition) error {
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tAREA\tINTERVAL\tTIMEOUT\tDESCRIPTION")
	for _, d := range defs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", d.Name, d.Area, d.Interval, d.Timeout, d.Description)
	}
	return tw.Flush()
}

// connectOnce connects the shared informers for one report, when a cluster
// is configured, and waits for their first list. The returned func stops them.
func connectOnce(ctx context.Context, s *setup) func() {
	_, err := kube.Connect(kube.ConnectOptions{
		ClientOptions: kube.ClientOptions{Kubeconfig: s.cfg.Kubeconfig, QPS: 20, Burst: 40, UserAgent: "node-doctor/" + versionString()},
		NodeName:      s.cfg.NodeName,
		Informers:     s.informers,
	})
	if err != nil {
		if !errors.Is(err, kube.ErrNoCluster) {
			s.log.Warn("no cluster access", "err", err)
		}
		return func() {}
	}
	ictx, cancel := context.WithCancel(ctx)
	if err := s.informers.Start(ictx, 30*time.Second); err != nil {
		s.log.Warn("kubernetes informers not synced", "err", err)
	}
	return cancel
}
