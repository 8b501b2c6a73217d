// Package app holds node-doctor's command line: flags, config merging and the
// check, run and version commands.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/node-doctor/node-doctor/pkg/check"
	"github.com/node-doctor/node-doctor/pkg/checks"
	"github.com/node-doctor/node-doctor/pkg/config"
	"github.com/node-doctor/node-doctor/pkg/cri"
	"github.com/node-doctor/node-doctor/pkg/dataplane"
	"github.com/node-doctor/node-doctor/pkg/host"
	"github.com/node-doctor/node-doctor/pkg/kube"
	"github.com/node-doctor/node-doctor/pkg/kubeproxy"
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
	// Flags given win over the config file.
	hostRoot, logLevel, logFormat optString
	only, skip                    []string
	// CRI endpoints; empty means resolve like crictl.
	runtimeEndpoint, imageEndpoint string
}

// commandFlags are a command's own flags: those that override the config
// file, and what it adds to the checks once they are built.
type commandFlags interface {
	override(c *config.Config) error
	addToChecks(s *setup) error
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
  node-doctor explain      one Service's path (rule by rule, against the API) or one pod on this node
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
	stringFlag(pf, &g.hostRoot, "host-root", "/", "where the node's filesystem is mounted: / on the host, /host in a pod that mounts it there")
	stringFlag(pf, &g.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	stringFlag(pf, &g.logFormat, "log-format", "text", "log format: text or json")
	pf.StringSliceVar(&g.only, "only", nil, "run only these checks (comma-separated names; see 'node-doctor check --list')")
	pf.StringSliceVar(&g.skip, "skip", nil, "do not run these checks (comma-separated names)")
	pf.StringVar(&g.runtimeEndpoint, "runtime-endpoint", "", "CRI runtime endpoint (unix:///run/containerd/containerd.sock); default: like crictl, $CONTAINER_RUNTIME_ENDPOINT, then /etc/crictl.yaml, then the containerd, CRI-O and cri-dockerd sockets, all under --host-root")
	pf.StringVar(&g.imageEndpoint, "image-endpoint", "", "CRI image endpoint; default: $IMAGE_SERVICE_ENDPOINT, /etc/crictl.yaml, then the runtime endpoint")
	root.AddCommand(newCheckCommand(g), newRunCommand(g), newExplainCommand(g), newVersionCommand())
	return root
}

// setup is what a command runs with: the final config, the dependencies
// built from it, and the checks built on them.
type setup struct {
	cfg  config.Config
	file *config.File // nil without --config
	deps checks.Deps
	all  []*check.Definition // every check, for the condition types node-doctor owns
	defs []*check.Definition // the checks that run
	log  *slog.Logger
	// level is the log level in force; a reload changes it.
	level *slog.LevelVar
	// criMetrics describe the runtime and every CRI call.
	criMetrics *cri.Metrics
	// dataplaneMetrics count the packet-filter table reads.
	dataplaneMetrics *dataplane.Metrics
	// criClient and criSource are the runtime the checks read.
	criClient *cri.Client
	criSource *cri.Source
	// informers are the process's shared Services/EndpointSlices/Node
	// informers, connected once a cluster is known.
	informers *kube.Informers
	// hostFS is the node's filesystem under the host root.
	hostFS fs.FS
	// noKube, when set, turns reporting to Kubernetes off and says why.
	noKube error
}

// setup reads the config file and the flags, builds the dependencies from
// the final config, then the checks, and applies the file's check sections
// to them.
func (g *globals) setup(cf commandFlags, stderr io.Writer) (*setup, error) {
	fail := func(err error) (*setup, error) { return nil, &exitError{ExitFailure, err} }
	file, cfg, err := g.loadConfig(cf)
	if err != nil {
		return fail(err)
	}
	if fi, err := os.Stat(cfg.HostRoot); err != nil || !fi.IsDir() {
		return fail(fmt.Errorf("host root %q is not a directory", cfg.HostRoot))
	}
	s := &setup{cfg: cfg, file: file, criMetrics: cri.NewMetrics(), dataplaneMetrics: dataplane.NewMetrics(), informers: kube.NewInformers()}
	s.log, s.level = newLogger(stderr, cfg.LogLevel, cfg.LogFormat)
	g.buildSources(s)
	if err := g.buildChecks(s, cf); err != nil {
		return fail(err)
	}
	return s, nil
}

// loadConfig parses the config file, when there is one, and lets the flags
// given override it.
func (g *globals) loadConfig(cf commandFlags) (*config.File, config.Config, error) {
	var file *config.File
	cfg := config.Default()
	if g.configFile != "" {
		var err error
		if file, err = config.ParseFile(g.configFile); err != nil {
			return nil, cfg, err
		}
		cfg = file.Config
	}
	g.hostRoot.to(&cfg.HostRoot)
	g.logLevel.to(&cfg.LogLevel)
	g.logFormat.to(&cfg.LogFormat)
	if err := cf.override(&cfg); err != nil {
		return nil, cfg, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, cfg, fmt.Errorf("invalid flags: %w", err)
	}
	return file, cfg, nil
}

// buildSources builds what the checks read from, for the host at
// s.cfg.HostRoot.
func (g *globals) buildSources(s *setup) {
	s.hostFS = host.FS(s.cfg.HostRoot)
	s.criClient = cri.NewClient(cri.ClientOptions{
		Endpoints: cri.EndpointOptions{RuntimeEndpoint: g.runtimeEndpoint, ImageEndpoint: g.imageEndpoint, Getenv: os.Getenv, HostFS: s.hostFS},
		Dial:      cri.UnixDialer(s.cfg.HostRoot),
		Observer:  s.criMetrics.Observe,
	})
	s.criSource = cri.NewSource(s.criClient, cri.SourceOptions{Metrics: s.criMetrics})
	informers := s.informers
	criSource := s.criSource
	s.deps = checks.Deps{
		Services: informers,
		Node:     informers,
		Dataplane: kubeproxy.NewSource(dataplane.Readers{IPTables: iptablesReader(s.cfg.DataplaneReader), NFT: nftReader(s.cfg.DataplaneReader), IPVS: dataplane.MobyIPVS{},
			// A kernel fact, whichever reader: unchanged tables are not read again.
			Generation: dataplane.NFTGeneration{NS: -1}},
			dataplane.SourceOptions{Metrics: s.dataplaneMetrics}),
		HostFS:    s.hostFS,
		Bridges:   netcheck.NetlinkBridges{NS: -1},
		Routes:    netcheck.NetlinkRoutes{NS: -1},
		Conntrack: netcheck.Ctnetlink{NS: -1},
		Clock:     clock.RealClock{},
		CRI:       criSource,
		Pods:      criSource,
		PodIPs:    criSource,
		APIPods:   informers,
	}
}

// iptablesReader reads iptables as dataplane.reader says: the nft backend
// over netlink (legacy always through iptables-legacy-save), or both by exec.
func iptablesReader(reader string) dataplane.IPTablesSaver {
	if reader == config.ReaderExec {
		return dataplane.ExecIPTablesSaver{}
	}
	return dataplane.NetlinkIPTablesSaver{NS: -1, Fallback: dataplane.ExecIPTablesSaver{}}
}

// nftReader reads kube-proxy's nftables tables as dataplane.reader says.
func nftReader(reader string) dataplane.NFTLister {
	if reader == config.ReaderExec {
		return dataplane.ExecNFT{}
	}
	return dataplane.NetlinkNFT{NS: -1}
}

// buildChecks builds every check on s.deps, applies the file's check
// sections and the command's additions, and selects those that run.
func (g *globals) buildChecks(s *setup, cf commandFlags) error {
	s.all = checks.All(s.deps)
	s.cfg.Disabled = map[string]bool{}
	if s.file != nil {
		if err := s.file.ApplyChecks(s.all, s.cfg.Disabled); err != nil {
			return err
		}
	}
	if err := cf.addToChecks(s); err != nil {
		return err
	}
	selected, err := check.Select(s.all, g.only, g.skip, s.cfg.Disabled)
	if err != nil {
		return err
	}
	s.defs = selected
	return nil
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, *slog.LevelVar) {
	lvl := new(slog.LevelVar)
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
	return l, lvl
}
