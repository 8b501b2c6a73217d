// Package app holds node-doctor's command line: flags, config merging and the
// check, run and version commands.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/node-doctor/node-doctor/pkg/check"
	"github.com/node-doctor/node-doctor/pkg/checks"
	"github.com/node-doctor/node-doctor/pkg/config"
	"github.com/node-doctor/node-doctor/pkg/cri"
	"github.com/node-doctor/node-doctor/pkg/host"
	"github.com/node-doctor/node-doctor/pkg/kube"
	"github.com/node-doctor/node-doctor/pkg/netcheck"
)

// Exit codes of node-doctor.
const (
	ExitHealthy  = 0
	ExitProblems = 1
	ExitFailure  = 2
)

// exitError carries an exit code up to Main.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// globals are the flags every command takes.
type globals struct {
	configFile string
	hostRoot   string
	logLevel   string
	logFormat  string
	only, skip []string
	// CRI endpoints; empty means resolve like crictl.
	runtimeEndpoint, imageEndpoint string
}

// Main runs node-doctor with args and returns its exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd := newRootCommand(stdout, stderr)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(ctx)
	if err == nil {
		return ExitHealthy
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil && ee.code == ExitFailure {
			fmt.Fprintln(stderr, "node-doctor:", ee.err)
		}
		return ee.code
	}
	fmt.Fprintln(stderr, "node-doctor:", err)
	return ExitFailure
}

func newRootCommand(stdout, stderr io.Writer) *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "node-doctor",
		Short: "Find what is broken on this Kubernetes node",
		Long: `node-doctor inspects a Kubernetes node the way an operator would: forwarding
sysctls, bridge netfilter and hairpin mode; kube-proxy's rules against the
Services in the API, its health, the iptables backends, the FORWARD policy,
conntrack and the pod CIDR route; the container runtime over CRI, as crictl
sees it; and the kernel log against node-problem-detector's rules. It reports
what is broken with what to do about it, and only reads.

  node-doctor check        one-shot report on the terminal (or -o json|yaml)
  node-doctor run          the agent: checks on intervals, /metrics, /healthz, /readyz
  node-doctor version      print the version

Exit codes of check: 0 healthy, 1 problems found or a check could not run,
2 node-doctor itself failed (bad flags or config).`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return &exitError{ExitFailure, err}
	})
	pf := root.PersistentFlags()
	pf.StringVar(&g.configFile, "config", "", "path of a YAML config file (optional; built-in defaults apply without one)")
	pf.StringVar(&g.hostRoot, "host-root", "/", "where the node's filesystem is mounted: / on the host, /host in a pod that mounts it there")
	pf.StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	pf.StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
	pf.StringSliceVar(&g.only, "only", nil, "run only these checks (comma-separated names; see 'node-doctor check --list')")
	pf.StringSliceVar(&g.skip, "skip", nil, "do not run these checks (comma-separated names)")
	pf.StringVar(&g.runtimeEndpoint, "runtime-endpoint", "", "CRI runtime endpoint (unix:///run/containerd/containerd.sock); default: like crictl, $CONTAINER_RUNTIME_ENDPOINT, then /etc/crictl.yaml, then the containerd, CRI-O and cri-dockerd sockets, all under --host-root")
	pf.StringVar(&g.imageEndpoint, "image-endpoint", "", "CRI image endpoint; default: $IMAGE_SERVICE_ENDPOINT, /etc/crictl.yaml, then the runtime endpoint")
	root.AddCommand(newCheckCommand(g), newRunCommand(g), newVersionCommand())
	return root
}

// setup merges file and flags, validates, and builds the selected checks.
type setup struct {
	cfg  config.Config
	all  []*check.Definition // every check, for the condition types node-doctor owns
	defs []*check.Definition // the checks that run
	log  *slog.Logger
	// criMetrics describe the runtime and every CRI call.
	criMetrics *cri.Metrics
	// informers are the process's shared Services/EndpointSlices/Node
	// informers, connected once a cluster is known.
	informers *kube.Informers
	// noKube, when set, turns reporting to Kubernetes off and says why.
	noKube error
}

func (g *globals) setup(flags *pflag.FlagSet, stderr io.Writer) (*setup, error) {
	fail := func(err error) (*setup, error) { return nil, &exitError{ExitFailure, err} }
	// Checks are built before the config is read so the file can be checked
	// against them; the host root only takes effect through hostFS.
	var hostFS lazyFS
	hostRoot := "/"
	criMetrics := cri.NewMetrics()
	criClient := cri.NewClient(cri.ClientOptions{
		Endpoints: cri.EndpointOptions{RuntimeEndpoint: g.runtimeEndpoint, ImageEndpoint: g.imageEndpoint, Getenv: os.Getenv, HostFS: &hostFS},
		Dial:      func(ctx context.Context, p string) (net.Conn, error) { return cri.UnixDialer(hostRoot)(ctx, p) },
		Observer:  criMetrics.Observe,
	})
	criSource := cri.NewSource(criClient, cri.SourceOptions{Metrics: criMetrics})
	informers := kube.NewInformers()
	defs := checks.All(checks.Deps{
		Services:  informers,
		Node:      informers,
		IPTables:  netcheck.ExecIPTablesSaver{},
		NFT:       netcheck.ExecNFT{},
		IPVS:      netcheck.MobyIPVS{},
		HostFS:    &hostFS,
		Bridges:   netcheck.NetlinkBridges{NS: -1},
		Routes:    netcheck.NetlinkRoutes{NS: -1},
		Conntrack: netcheck.Ctnetlink{NS: -1},
		Clock:     clock.RealClock{},
		CRI:       criSource,
		Pods:      criSource,
		PodIPs:    criSource,
		APIPods:   informers,
	})
	cfg := config.Default()
	if g.configFile != "" {
		var err error
		if cfg, err = config.LoadFile(g.configFile, defs); err != nil {
			return fail(err)
		}
	}
	override := func(name string, dst *string, v string) {
		if flags.Changed(name) {
			*dst = v
		}
	}
	override("host-root", &cfg.HostRoot, g.hostRoot)
	override("log-level", &cfg.LogLevel, g.logLevel)
	override("log-format", &cfg.LogFormat, g.logFormat)
	for name, dst := range map[string]*string{"metrics-address": &cfg.MetricsAddress, "kubeconfig": &cfg.Kubeconfig, "node-name": &cfg.NodeName} {
		if f := flags.Lookup(name); f != nil && f.Changed {
			*dst = f.Value.String()
		}
	}
	if f := flags.Lookup("condition-heartbeat"); f != nil && f.Changed {
		cfg.ConditionHeartbeat, _ = flags.GetDuration("condition-heartbeat")
	}
	if err := cfg.Validate(); err != nil {
		return fail(fmt.Errorf("invalid flags: %w", err))
	}
	if fi, err := os.Stat(cfg.HostRoot); err != nil || !fi.IsDir() {
		return fail(fmt.Errorf("host root %q is not a directory", cfg.HostRoot))
	}
	hostFS.FS = host.FS(cfg.HostRoot)
	hostRoot = cfg.HostRoot
	selected, err := check.Select(defs, g.only, g.skip, cfg.Disabled)
	if err != nil {
		return fail(err)
	}
	log := newLogger(stderr, cfg.LogLevel, cfg.LogFormat)
	return &setup{cfg: cfg, all: defs, defs: selected, log: log, criMetrics: criMetrics, informers: informers}, nil
}

func newLogger(w io.Writer, level, format string) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(level)) // validated by config
	opts := &slog.HandlerOptions{Level: lvl}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if format == "json" {
		h = slog.NewJSONHandler(w, opts)
	}
	l := slog.New(h)
	klog.SetSlogLogger(l)
	// Checks that log from their own goroutines (kernel-log, custom-plugin)
	// use the default logger.
	slog.SetDefault(l)
	return l
}
