// Package harness runs a real single-node Kubernetes cluster on this host
// for end-to-end tests: etcd, kube-apiserver, kube-controller-manager,
// containerd with a bridge CNI network, kubelet and kube-proxy, each a child
// process with its own config, data and log under one work directory.
//
// Everything it changes on the host (links, addresses, routes, mounts,
// firewall rules, sysctls, cgroups) is recorded in <WorkDir>/state.json and
// undone by Stop, by Teardown from another process (make cluster-down), or
// by the next Start after a crashed run.
package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Defaults. The node IP is a TEST-NET-2 address on lo: the host's real
// network (TEST-NET-1 on eth0 here) is never used. The pod and service
// ranges are checked against the host's routes at start.
const (
	DefaultNodeName    = "node-doctor-e2e"
	DefaultNodeIP      = "198.51.100.10"
	defaultPodCIDR     = "10.244.0.0/24"
	defaultServiceCIDR = "10.96.0.0/16"
)

// Ports the components listen on; checked free before start.
const (
	etcdPort       = 2379
	etcdPeerPort   = 2380
	apiserverPort  = 6443
	kcmPort        = 10257
	kubeletPort    = 10250
	kubeletHealthz = 10248
	proxyHealthz   = 10256
	proxyMetrics   = 10249
)

// activePointer names the work directory of the node that is up, so a
// crashed run can be torn down by the next Start or by cluster-down.
const activePointer = "/run/node-doctor-harness/active"

// Options select what Start brings up. Zero values pick the defaults.
type Options struct {
	// ProxyMode is "iptables" (default) or "nftables".
	ProxyMode string
	// WorkDir holds every config, data dir and log. Default: a new temp dir.
	// It must not exist or be empty.
	WorkDir string
	// KubeBinDir holds kube-apiserver, kube-controller-manager, kubelet and
	// kube-proxy. Default: $NODE_DOCTOR_KUBE_BIN_DIR, else what
	// hack/kube/build.sh print-bin-dir says.
	KubeBinDir  string
	NodeName    string
	NodeIP      string
	PodCIDR     string
	ServiceCIDR string
	// Timeout bounds the whole start. Default 3 minutes.
	Timeout time.Duration
	// CriticalPodsNeedQuota configures the API server as GKE does: pods of
	// the system-node-critical and system-cluster-critical classes are
	// admitted only into namespaces with a ResourceQuota covering them
	// (ResourceQuota admission, limitedResources).
	CriticalPodsNeedQuota bool
	// Detached marks a node meant to outlive the process that started it
	// (make cluster-up). Otherwise, once the starting process is gone (a test
	// binary killed by -timeout), the next Start tears the node down.
	Detached bool
}

// Cluster is a running node. Stop it when done.
type Cluster struct {
	Kubeconfig  string // admin kubeconfig (system:masters)
	Client      kubernetes.Interface
	RESTConfig  *rest.Config
	CRIEndpoint string // unix://<containerd socket>
	Containerd  *Containerd
	NodeName    string
	NodeIP      string
	ProxyMode   string
	PodCIDR     string
	ServiceCIDR string
	WorkDir     string
	// KubeletConfig is the kubelet's --config file.
	KubeletConfig string

	log   *slog.Logger
	state *State
}

// State is what Teardown needs to undo a node, persisted as state.json.
type State struct {
	WorkDir     string            `json:"work_dir"`
	KubeBinDir  string            `json:"kube_bin_dir"`
	ProxyMode   string            `json:"proxy_mode"`
	NodeIP      string            `json:"node_ip"`
	PodCIDR     string            `json:"pod_cidr"`
	ServiceCIDR string            `json:"service_cidr"`
	Containerd  string            `json:"containerd_address,omitempty"`
	Procs       []*Proc           `json:"procs"`
	Sysctls     map[string]string `json:"sysctls"`
	AddedAddr   bool              `json:"added_addr"`
	AddedRoutes []string          `json:"added_routes"`
	// Undo holds `ip` argument lists that reverse host changes, run in order.
	Undo [][]string `json:"undo"`
	// Host paths that existed before start; others the node created are removed.
	Preexisting   map[string]bool     `json:"preexisting"`
	NetnsBefore   []string            `json:"netns_before"`
	ChainsBefore  map[string][]string `json:"chains_before"`
	NftBefore     []nftTable          `json:"nft_before"`
	KubeProxyUsed bool                `json:"kube_proxy_used"`
	// Owner is the process that started the node; see Options.Detached.
	Owner    Proc `json:"owner"`
	Detached bool `json:"detached"`
}

func currentOwner() Proc {
	st, _ := procStartTime(os.Getpid())
	return Proc{Name: "owner", Pid: os.Getpid(), StartTime: st}
}

// hostPaths are shared host locations kubelet/containerd/CNI may create.
// kubelet hard-codes /var/lib/kubelet/device-plugins whatever --root-dir says.
var hostPaths = []string{"/run/containerd", "/var/run/netns", "/var/lib/cni", "/var/lib/kubelet",
	"/var/log/containers", "/var/log/pods"}

// cgroupNames are the cgroups kubelet (cgroupfs driver) creates per hierarchy.
var cgroupNames = []string{"kubepods"}

func (s *State) save() error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("harness: encode state: %w", err)
	}
	if err := os.WriteFile(filepath.Join(s.WorkDir, "state.json"), b, 0o644); err != nil {
		return fmt.Errorf("harness: write state: %w", err)
	}
	return nil
}

// LoadState reads the state of a node from its work directory.
func LoadState(workDir string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(workDir, "state.json"))
	if err != nil {
		return nil, fmt.Errorf("harness: read state: %w", err)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("harness: parse state: %w", err)
	}
	return &s, nil
}

// ActiveWorkDir returns the work dir of the node this host runs, or "".
func ActiveWorkDir() string {
	b, err := os.ReadFile(activePointer)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func (s *State) anyAlive() *Proc {
	for _, p := range s.Procs {
		if p.Alive() {
			return p
		}
	}
	return nil
}

func (s *State) addProc(p *Proc) error {
	s.Procs = append(s.Procs, p)
	return s.save()
}

func (s *State) proc(name string) *Proc {
	for _, p := range s.Procs {
		if p.Name == name {
			return p
		}
	}
	return nil
}

func (o *Options) defaults() error {
	if o.ProxyMode == "" {
		o.ProxyMode = "iptables"
	}
	if o.ProxyMode != "iptables" && o.ProxyMode != "nftables" {
		return fmt.Errorf("harness: proxy mode %q: want iptables or nftables (this kernel has no IPVS)", o.ProxyMode)
	}
	if o.NodeName == "" {
		o.NodeName = DefaultNodeName
	}
	if o.NodeIP == "" {
		o.NodeIP = DefaultNodeIP
	}
	if o.PodCIDR == "" {
		o.PodCIDR = defaultPodCIDR
	}
	if o.ServiceCIDR == "" {
		o.ServiceCIDR = defaultServiceCIDR
	}
	if o.Timeout == 0 {
		o.Timeout = 3 * time.Minute
	}
	if o.KubeBinDir == "" {
		dir, err := KubeBinDir()
		if err != nil {
			return err
		}
		o.KubeBinDir = dir
	}
	for _, b := range []string{"kube-apiserver", "kube-controller-manager", "kubelet", "kube-proxy"} {
		if _, err := os.Stat(filepath.Join(o.KubeBinDir, b)); err != nil {
			return fmt.Errorf("harness: %s missing in %s (run make kube-bins): %w", b, o.KubeBinDir, err)
		}
	}
	return nil
}

// KubeBinDir finds the pinned Kubernetes binaries: $NODE_DOCTOR_KUBE_BIN_DIR,
// else the directory hack/kube/build.sh builds into.
func KubeBinDir() (string, error) {
	if d := os.Getenv("NODE_DOCTOR_KUBE_BIN_DIR"); d != "" {
		return d, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	out, err := exec.Command(filepath.Join(root, "hack/kube/build.sh"), "print-bin-dir").Output()
	if err != nil {
		return "", fmt.Errorf("harness: hack/kube/build.sh print-bin-dir: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// RepoRoot walks up from the working directory to node-doctor's go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("harness: getwd: %w", err)
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(b), "module github.com/node-doctor/node-doctor\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("harness: node-doctor repository root not found above the working directory")
		}
		dir = parent
	}
}

// Start brings the node up and waits until it is Ready and kube-proxy is
// healthy. On error the returned Cluster is nil and everything started so far
// has been torn down; the work dir (with logs) is kept and named in the error.
func Start(ctx context.Context, log *slog.Logger, opts Options) (*Cluster, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("harness: must run as root")
	}
	if err := recoverStale(ctx, log); err != nil {
		return nil, err
	}
	if opts.WorkDir == "" {
		d, err := os.MkdirTemp("", "nd-node-")
		if err != nil {
			return nil, fmt.Errorf("harness: work dir: %w", err)
		}
		opts.WorkDir = d
	} else if len(dirEntries(opts.WorkDir)) > 0 {
		return nil, fmt.Errorf("harness: work dir %s is not empty", opts.WorkDir)
	}
	wd, err := filepath.Abs(opts.WorkDir)
	if err != nil {
		return nil, fmt.Errorf("harness: work dir: %w", err)
	}
	if err := os.MkdirAll(wd, 0o755); err != nil {
		return nil, fmt.Errorf("harness: work dir: %w", err)
	}
	c := &Cluster{
		NodeName: opts.NodeName, NodeIP: opts.NodeIP, ProxyMode: opts.ProxyMode,
		PodCIDR: opts.PodCIDR, ServiceCIDR: opts.ServiceCIDR, WorkDir: wd, log: log,
	}
	if err := claim(wd); err != nil {
		_ = os.Remove(wd) // only if empty: nothing was started
		return nil, err
	}
	start := time.Now()
	log.Info("starting node", "work_dir", wd, "proxy_mode", opts.ProxyMode, "node_ip", opts.NodeIP)
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	if err := c.start(ctx, opts); err != nil {
		tails := c.LogTails(40)
		stopCtx, stopCancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer stopCancel()
		if c.state != nil {
			if terr := Teardown(stopCtx, log, c.state, true); terr != nil {
				log.Error("teardown after failed start", "err", terr)
			}
		}
		release(wd)
		return nil, fmt.Errorf("harness: start node (logs kept in %s): %w\n%s", wd, err, tails)
	}
	log.Info("node ready", "node", c.NodeName, "proxy_mode", c.ProxyMode, "elapsed", time.Since(start).Round(100*time.Millisecond),
		"kubeconfig", c.Kubeconfig)
	return c, nil
}

// ErrBusy is returned by Start and StartContainerd when another harness
// node runs on this host: there is one cni0 and one set of ports.
var ErrBusy = errors.New("another harness node is running on this host")

// recoverStale tears down a node whose harness died without stopping it,
// and refuses (ErrBusy) to start next to a node that is still running.
func recoverStale(ctx context.Context, log *slog.Logger) error {
	wd := ActiveWorkDir()
	if wd == "" {
		return nil
	}
	st, err := LoadState(wd)
	if err != nil {
		// A node that just claimed the pointer has not saved its state yet.
		if fi, serr := os.Stat(activePointer); serr == nil && time.Since(fi.ModTime()) < time.Minute {
			return fmt.Errorf("harness: %w (starting in %s)", ErrBusy, wd)
		}
		log.Warn("dropping unreadable active node pointer", "work_dir", wd, "err", err)
		return os.Remove(activePointer)
	}
	if p := st.anyAlive(); p != nil {
		if st.Detached || st.Owner.Pid == 0 || st.Owner.Alive() {
			return fmt.Errorf("harness: %w: %s (%s pid %d); stop it first (make cluster-down)", ErrBusy, wd, p.Name, p.Pid)
		}
		log.Warn("the process that started this node is gone; tearing the node down", "work_dir", wd, "owner_pid", st.Owner.Pid)
		return Teardown(ctx, log, st, true)
	}
	log.Warn("tearing down leftovers of a node that was not stopped", "work_dir", wd)
	return Teardown(ctx, log, st, true)
}

// claim atomically makes wd the active node, or fails with ErrBusy.
func claim(wd string) error {
	if err := os.MkdirAll(filepath.Dir(activePointer), 0o755); err != nil {
		return fmt.Errorf("harness: active pointer: %w", err)
	}
	f, err := os.OpenFile(activePointer, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		if os.IsExist(err) {
			return fmt.Errorf("harness: %w: %s", ErrBusy, ActiveWorkDir())
		}
		return fmt.Errorf("harness: active pointer: %w", err)
	}
	defer f.Close()
	if _, err := f.WriteString(wd + "\n"); err != nil {
		return fmt.Errorf("harness: active pointer: %w", err)
	}
	return nil
}

// release drops the active pointer if it names wd.
func release(wd string) {
	if ActiveWorkDir() == wd {
		_ = os.Remove(activePointer)
		_ = os.Remove(filepath.Dir(activePointer)) // only if empty
	}
}

func (c *Cluster) start(ctx context.Context, opts Options) error {
	wd := c.WorkDir
	routes := []string{opts.PodCIDR, opts.ServiceCIDR}
	if !loHasAddr(opts.NodeIP) {
		routes = append(routes, opts.NodeIP+"/32")
	}
	if err := checkRanges(ctx, routes...); err != nil {
		return err
	}
	if linkExists(BridgeName) {
		return fmt.Errorf("link %s already exists; refusing to share it", BridgeName)
	}
	st := &State{
		WorkDir: wd, KubeBinDir: opts.KubeBinDir, ProxyMode: opts.ProxyMode, NodeIP: opts.NodeIP,
		PodCIDR: opts.PodCIDR, ServiceCIDR: opts.ServiceCIDR,
		Owner: currentOwner(), Detached: opts.Detached,
		Sysctls:      readSysctls(),
		Preexisting:  map[string]bool{},
		NetnsBefore:  dirEntries("/var/run/netns"),
		ChainsBefore: iptablesChains(ctx),
		NftBefore:    nftTables(ctx),
	}
	for _, p := range hostPaths {
		st.Preexisting[p] = pathExists(p)
	}
	for _, cg := range cgroupDirs() {
		st.Preexisting[cg] = true
	}
	c.state = st
	if err := st.save(); err != nil {
		return err
	}

	// Node address on lo, and a blackhole for the service range so a
	// ClusterIP kube-proxy has not (yet) programmed is dropped here instead
	// of following the default route off the machine.
	if !loHasAddr(opts.NodeIP) {
		if _, err := run(ctx, "ip", "addr", "add", opts.NodeIP+"/32", "dev", "lo"); err != nil {
			return err
		}
		st.AddedAddr = true
		if err := st.save(); err != nil {
			return err
		}
	}
	if _, err := run(ctx, "ip", "route", "add", "blackhole", opts.ServiceCIDR); err != nil {
		return err
	}
	st.AddedRoutes = append(st.AddedRoutes, "blackhole "+opts.ServiceCIDR)
	if err := st.save(); err != nil {
		return err
	}
	if err := confinePods(ctx, st, opts.PodCIDR); err != nil {
		return err
	}
	if err := checkPorts(opts.NodeIP); err != nil {
		return err
	}
	if err := ensureBridgeNetfilter(ctx); err != nil {
		return err
	}

	p, err := writePKI(filepath.Join(wd, "pki"), []net.IP{net.ParseIP(opts.NodeIP), serviceIP(opts.ServiceCIDR)})
	if err != nil {
		return err
	}
	tokens, err := writeTokens(filepath.Join(wd, "pki", "tokens.csv"), opts.NodeName)
	if err != nil {
		return err
	}
	server := fmt.Sprintf("https://%s:%d", opts.NodeIP, apiserverPort)
	kc := map[string]string{}
	for _, who := range []string{"admin", "kubelet", "kube-proxy", "kube-controller-manager"} {
		path := filepath.Join(wd, who+".kubeconfig")
		if err := writeKubeconfig(path, server, p.caPEM, tokens[who]); err != nil {
			return err
		}
		kc[who] = path
	}
	c.Kubeconfig = kc["admin"]
	c.RESTConfig = &rest.Config{Host: server, BearerToken: tokens["admin"],
		TLSClientConfig: rest.TLSClientConfig{CAData: p.caPEM}, QPS: 50, Burst: 100}
	cs, err := kubernetes.NewForConfig(c.RESTConfig)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	c.Client = cs
	logDir := filepath.Join(wd, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return fmt.Errorf("log dir: %w", err)
	}
	bin := func(name string) string { return filepath.Join(opts.KubeBinDir, name) }

	// etcd
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", etcdPort)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", etcdPeerPort)
	etcd, err := startProc(logDir, "etcd", "etcd", []string{
		"--name=default", "--data-dir=" + filepath.Join(wd, "etcd"),
		"--listen-client-urls=" + etcdURL, "--advertise-client-urls=" + etcdURL,
		"--listen-peer-urls=" + peerURL, "--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=default=" + peerURL, "--logger=zap", "--log-outputs=stderr",
	}, nil)
	if err != nil {
		return err
	}
	if err := st.addProc(etcd); err != nil {
		return err
	}
	if err := waitFor(ctx, etcd, 30*time.Second, "etcd", httpOK(etcdURL+"/health", nil)); err != nil {
		return err
	}

	// kube-apiserver
	var admission []string
	if opts.CriticalPodsNeedQuota {
		path := filepath.Join(wd, "admission.yaml")
		if err := os.WriteFile(path, []byte(criticalPodsAdmission), 0o644); err != nil {
			return err
		}
		admission = []string{"--admission-control-config-file=" + path}
	}
	apiserver, err := startProc(logDir, "kube-apiserver", bin("kube-apiserver"), append([]string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=" + opts.NodeIP, "--advertise-address=" + opts.NodeIP,
		fmt.Sprintf("--secure-port=%d", apiserverPort),
		"--tls-cert-file=" + p.ServingCert, "--tls-private-key-file=" + p.ServingKey,
		"--client-ca-file=" + p.CACert,
		"--token-auth-file=" + filepath.Join(wd, "pki", "tokens.csv"),
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--service-cluster-ip-range=" + opts.ServiceCIDR,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + p.SAPub,
		"--service-account-signing-key-file=" + p.SAKey,
		"--allow-privileged=true",
		"--kubelet-preferred-address-types=InternalIP",
		"--profiling=false",
		"--v=1",
	}, admission...), nil)
	if err != nil {
		return err
	}
	if err := st.addProc(apiserver); err != nil {
		return err
	}
	if err := waitFor(ctx, apiserver, 90*time.Second, "kube-apiserver", func(ctx context.Context) (bool, error) {
		body, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err == nil && string(body) == "ok", err
	}); err != nil {
		return err
	}

	// kube-controller-manager
	kcm, err := startProc(logDir, "kube-controller-manager", bin("kube-controller-manager"), []string{
		"--kubeconfig=" + kc["kube-controller-manager"],
		"--authentication-kubeconfig=" + kc["kube-controller-manager"],
		"--authorization-kubeconfig=" + kc["kube-controller-manager"],
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", kcmPort),
		"--cert-dir=" + filepath.Join(wd, "kcm-certs"),
		"--use-service-account-credentials=true",
		"--service-account-private-key-file=" + p.SAKey,
		"--root-ca-file=" + p.CACert,
		"--leader-elect=false",
		"--profiling=false",
		"--v=1",
	}, nil)
	if err != nil {
		return err
	}
	if err := st.addProc(kcm); err != nil {
		return err
	}
	if err := waitFor(ctx, kcm, 60*time.Second, "kube-controller-manager",
		httpOK(fmt.Sprintf("https://127.0.0.1:%d/healthz", kcmPort), nil)); err != nil {
		return err
	}

	// containerd
	ctrd, err := startContainerdState(ctx, c.log, st, ContainerdOptions{Dir: filepath.Join(wd, "containerd"), PodCIDR: opts.PodCIDR})
	if ctrd != nil {
		c.Containerd = ctrd
		c.CRIEndpoint = ctrd.Endpoint
	}
	if err != nil {
		return err
	}

	// kubelet
	kubeletCfg := filepath.Join(wd, "kubelet.json")
	c.KubeletConfig = kubeletCfg
	if err := writeKubeletConfig(kubeletCfg, wd, opts, ctrd.Endpoint); err != nil {
		return err
	}
	kubelet, err := startProc(logDir, "kubelet", bin("kubelet"), []string{
		"--config=" + kubeletCfg,
		"--kubeconfig=" + kc["kubelet"],
		"--root-dir=" + filepath.Join(wd, "kubelet"),
		"--cert-dir=" + filepath.Join(wd, "kubelet-pki"),
		"--hostname-override=" + opts.NodeName,
		"--node-ip=" + opts.NodeIP,
		"--v=1",
	}, nil)
	if err != nil {
		return err
	}
	if err := st.addProc(kubelet); err != nil {
		return err
	}
	if err := waitFor(ctx, kubelet, 90*time.Second, "node Ready", func(ctx context.Context) (bool, error) {
		return nodeReady(ctx, cs, opts.NodeName)
	}); err != nil {
		return err
	}

	// kube-proxy
	proxyCfg := filepath.Join(wd, "kube-proxy.json")
	if err := writeKubeProxyConfig(proxyCfg, opts, kc["kube-proxy"]); err != nil {
		return err
	}
	st.KubeProxyUsed = true
	proxy, err := startProc(logDir, "kube-proxy", bin("kube-proxy"), []string{"--config=" + proxyCfg, "--v=1"}, nil)
	if err != nil {
		return err
	}
	if err := st.addProc(proxy); err != nil {
		return err
	}
	if err := waitFor(ctx, proxy, 60*time.Second, "kube-proxy /healthz",
		httpOK(fmt.Sprintf("http://127.0.0.1:%d/healthz", proxyHealthz), nil)); err != nil {
		return err
	}
	if err := waitFor(ctx, proxy, 10*time.Second, "kube-proxy /proxyMode",
		httpOK(fmt.Sprintf("http://127.0.0.1:%d/proxyMode", proxyMetrics), []byte(opts.ProxyMode))); err != nil {
		return err
	}

	// Pods need the default ServiceAccount and kube-root-ca.crt, both
	// created asynchronously by kube-controller-manager.
	return waitFor(ctx, kcm, 60*time.Second, "default service account", func(ctx context.Context) (bool, error) {
		return defaultSAReady(ctx, cs)
	})
}

func startContainerdState(ctx context.Context, log *slog.Logger, st *State, opts ContainerdOptions) (*Containerd, error) {
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("containerd dir: %w", err)
	}
	_, _, sock, _ := containerdDirs(opts.Dir)
	st.Containerd = sock
	c, err := startContainerd(ctx, log, opts)
	if c != nil && c.Proc != nil {
		if serr := st.addProc(c.Proc); serr != nil && err == nil {
			err = serr
		}
	}
	return c, err
}

func serviceIP(cidr string) net.IP {
	_, n, err := net.ParseCIDR(cidr)
	if err != nil {
		return nil
	}
	ip := n.IP.To4()
	if ip == nil {
		return nil
	}
	out := make(net.IP, 4)
	copy(out, ip)
	out[3]++
	return out
}

// checkPorts fails early, naming the port, when something already listens.
func checkPorts(nodeIP string) error {
	addrs := []string{
		fmt.Sprintf("127.0.0.1:%d", etcdPort), fmt.Sprintf("127.0.0.1:%d", etcdPeerPort),
		fmt.Sprintf("%s:%d", nodeIP, apiserverPort), fmt.Sprintf("127.0.0.1:%d", kcmPort),
		fmt.Sprintf("%s:%d", nodeIP, kubeletPort), fmt.Sprintf("127.0.0.1:%d", kubeletHealthz),
		fmt.Sprintf("127.0.0.1:%d", proxyHealthz), fmt.Sprintf("127.0.0.1:%d", proxyMetrics),
	}
	for _, a := range addrs {
		l, err := net.Listen("tcp", a)
		if err != nil {
			return fmt.Errorf("port %s is busy (another node running? make cluster-down): %w", a, err)
		}
		l.Close()
	}
	return nil
}

func randomToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// writeTokens writes the static token file: admin is system:masters, the
// node components get the identities the RBAC/Node authorizers expect.
func writeTokens(path, nodeName string) (map[string]string, error) {
	tokens := map[string]string{}
	lines := []struct{ who, user, groups string }{
		{"admin", "admin", "system:masters"},
		{"kubelet", "system:node:" + nodeName, "system:nodes"},
		{"kube-proxy", "system:kube-proxy", ""},
		{"kube-controller-manager", "system:kube-controller-manager", ""},
	}
	var b strings.Builder
	for i, l := range lines {
		t := randomToken()
		tokens[l.who] = t
		fmt.Fprintf(&b, "%s,%s,uid-%d,%q\n", t, l.user, i, l.groups)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return nil, fmt.Errorf("token file: %w", err)
	}
	return tokens, nil
}

// Logs maps each component to its log file.
func (c *Cluster) Logs() map[string]string {
	m := map[string]string{}
	if c.state == nil {
		return m
	}
	for _, p := range c.state.Procs {
		m[p.Name] = p.LogPath
	}
	return m
}

// LogTails returns the last n lines of every component log.
func (c *Cluster) LogTails(n int) string {
	if c.state == nil {
		return ""
	}
	var b strings.Builder
	names := []string{}
	logs := c.Logs()
	for name := range logs {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fmt.Fprintf(&b, "===== %s (%s) =====\n%s\n", name, logs[name], Tail(logs[name], n))
	}
	return b.String()
}

// Stop tears the node down; the work dir is removed unless keepWorkDir.
func (c *Cluster) Stop(ctx context.Context, keepWorkDir bool) error {
	if c == nil || c.state == nil {
		return nil
	}
	return Teardown(ctx, c.log, c.state, keepWorkDir)
}

// criticalPodsAdmission limits the critical priority classes to namespaces
// with a quota for them, as GKE's API server does (Options.CriticalPodsNeedQuota).
const criticalPodsAdmission = `apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
  - name: ResourceQuota
    configuration:
      apiVersion: apiserver.config.k8s.io/v1
      kind: ResourceQuotaConfiguration
      limitedResources:
        - resource: pods
          matchScopes:
            - scopeName: PriorityClass
              operator: In
              values: [system-node-critical, system-cluster-critical]
`
