package netcheck

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// ServiceLister gives the checks the API's Services and EndpointSlices, and
// this node, from the process's shared informers.
type ServiceLister interface {
	Services() ([]*corev1.Service, error)
	EndpointSlices() ([]*discoveryv1.EndpointSlice, error)
	// Node returns this node (for its pod CIDRs); nil when not known yet.
	Node() (*corev1.Node, error)
	NodeName() string
}

// IPTables backends.
const (
	BackendNFT    = "nft"
	BackendLegacy = "legacy"
)

// IPTablesSaver runs iptables-save for one table of one backend and parses
// the output into into as it streams.
type IPTablesSaver interface {
	Save(ctx context.Context, backend string, ipv6 bool, table string, into *IPTables) error
}

// NFTLister reads one nftables table into into (over netlink, or nft -j
// parsed as it streams); ok is false when the table does not exist.
type NFTLister interface {
	ListTable(ctx context.Context, family, table string, into *NFTTable) (ok bool, err error)
}

// KubeProxyAPI is kube-proxy's own HTTP endpoints.
type KubeProxyAPI interface {
	// ProxyMode returns the mode from /proxyMode on the metrics address.
	ProxyMode(ctx context.Context) (string, error)
	// Healthz returns /healthz on the health address.
	Healthz(ctx context.Context) (KubeProxyHealthz, error)
	// Sync returns the sync timestamps from /metrics.
	Sync(ctx context.Context) (KubeProxySync, error)
	// NodePortAddresses returns --nodeport-addresses from /configz.
	NodePortAddresses(ctx context.Context) ([]string, error)
}

// KubeProxyHealthz is kube-proxy's /healthz answer.
type KubeProxyHealthz struct {
	StatusCode  int
	Healthy     bool      `json:"healthy"`
	LastUpdated time.Time `json:"lastUpdated"`
	CurrentTime time.Time `json:"currentTime"`
}

// KubeProxySync is what kube-proxy's metrics say about its rule syncs.
type KubeProxySync struct {
	// LastSync and LastQueued per IP family ("IPv4", "IPv6").
	LastSync, LastQueued map[string]time.Time
	// RestoreFailures counts failed iptables-restore / nft runs.
	RestoreFailures float64
}

// ExecIPTablesSaver runs iptables-legacy-save / iptables-nft-save (and the
// ip6 variants) from PATH, streaming into the parser.
type ExecIPTablesSaver struct {
	// Prefix runs the tools through another command (tests: ip netns exec NS).
	Prefix []string
}

// Save runs one iptables-save for one table.
func (e ExecIPTablesSaver) Save(ctx context.Context, backend string, ipv6 bool, table string, into *IPTables) error {
	bin := "iptables-" + backend + "-save"
	if ipv6 {
		bin = "ip6tables-" + backend + "-save"
	}
	if backend == BackendLegacy && len(e.Prefix) == 0 && !legacyTableLoaded(ipv6, table) {
		// Asking the kernel for a legacy table it does not have loads its
		// module and creates it; read only the ones that exist.
		return nil
	}
	args := append(append([]string{}, e.Prefix...), bin, "-t", table)
	cmd := readerCommand(ctx, args[0], args[1:]...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("%s: %w", bin, err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: %w", bin, err)
	}
	defer closeOnDone(ctx, out)()
	perr := parseIPTablesSaveInto(out, into)
	if perr != nil {
		_, _ = io.Copy(io.Discard, out)
	}
	if err := cmd.Wait(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		// A table that was never created (legacy backend, module not loaded)
		// is empty, not an error.
		if strings.Contains(msg, "does not exist") || strings.Contains(msg, "Table does not exist") {
			return nil
		}
		return fmt.Errorf("%s -t %s: %w: %s", bin, table, err, msg)
	}
	return perr
}

// legacyTableLoaded says the legacy table exists in this network namespace,
// from /proc/net/ip_tables_names (what iptables-legacy-save itself reads).
func legacyTableLoaded(ipv6 bool, table string) bool {
	names := "/proc/self/net/ip_tables_names"
	if ipv6 {
		names = "/proc/self/net/ip6_tables_names"
	}
	b, err := os.ReadFile(names)
	if err != nil {
		return false
	}
	for _, n := range strings.Fields(string(b)) {
		if n == table {
			return true
		}
	}
	return false
}

// ExecNFT runs nft -j.
type ExecNFT struct {
	// Prefix runs nft through another command (tests: ip netns exec NS).
	Prefix []string
}

// ListTable runs `nft -j list table FAMILY TABLE`, streaming into the parser.
func (e ExecNFT) ListTable(ctx context.Context, family, table string, into *NFTTable) (bool, error) {
	args := append(append([]string{}, e.Prefix...), "nft", "-j", "list", "table", family, table)
	cmd := readerCommand(ctx, args[0], args[1:]...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return false, fmt.Errorf("nft: %w", err)
	}
	if err := cmd.Start(); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return false, nil
		}
		return false, fmt.Errorf("nft: %w", err)
	}
	defer closeOnDone(ctx, out)()
	// An absent table prints nothing: the parser's error is the exit's.
	perr := parseNFTJSONInto(out, into)
	_, _ = io.Copy(io.Discard, out)
	if err := cmd.Wait(); err != nil {
		if strings.Contains(stderr.String(), "No such file or directory") {
			return false, nil
		}
		return false, fmt.Errorf("nft list table %s %s: %w: %s", family, table, err, strings.TrimSpace(stderr.String()))
	}
	if perr != nil {
		return false, fmt.Errorf("nft table %s %s: %w", family, table, perr)
	}
	return true, nil
}

// KubeProxyHTTP talks to kube-proxy on its metrics and health addresses.
type KubeProxyHTTP struct {
	// MetricsURL and HealthURL, e.g. http://127.0.0.1:10249 and :10256.
	MetricsURL, HealthURL string
	Client                *http.Client
}

func (k KubeProxyHTTP) get(ctx context.Context, url string) (int, []byte, error) {
	c := k.Client
	if c == nil {
		c = &http.Client{Timeout: 5 * time.Second}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, fmt.Errorf("kube-proxy: %w", err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("kube-proxy: get %s: %w", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return resp.StatusCode, nil, fmt.Errorf("kube-proxy: read %s: %w", url, err)
	}
	return resp.StatusCode, b, nil
}

// ProxyMode reads /proxyMode.
func (k KubeProxyHTTP) ProxyMode(ctx context.Context) (string, error) {
	code, b, err := k.get(ctx, k.MetricsURL+"/proxyMode")
	if err != nil {
		return "", err
	}
	if code != http.StatusOK {
		return "", fmt.Errorf("kube-proxy: /proxyMode: HTTP %d", code)
	}
	return strings.TrimSpace(string(b)), nil
}

// Healthz reads /healthz (503 with a body when unhealthy).
func (k KubeProxyHTTP) Healthz(ctx context.Context) (KubeProxyHealthz, error) {
	code, b, err := k.get(ctx, k.HealthURL+"/healthz")
	if err != nil {
		return KubeProxyHealthz{}, err
	}
	h := KubeProxyHealthz{StatusCode: code}
	if err := json.Unmarshal(b, &h); err != nil {
		h.Healthy = code == http.StatusOK
	}
	h.StatusCode = code
	return h, nil
}

// NodePortAddresses reads nodePortAddresses from /configz (served on the
// metrics address; nil when kube-proxy uses its default).
func (k KubeProxyHTTP) NodePortAddresses(ctx context.Context) ([]string, error) {
	code, b, err := k.get(ctx, k.MetricsURL+"/configz")
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("kube-proxy: /configz: HTTP %d", code)
	}
	return ParseKubeProxyConfigz(b)
}

// ParseKubeProxyConfigz returns nodePortAddresses from kube-proxy's /configz.
func ParseKubeProxyConfigz(b []byte) ([]string, error) {
	var cz map[string]struct {
		NodePortAddresses []string `json:"nodePortAddresses"`
	}
	if err := json.Unmarshal(b, &cz); err != nil {
		return nil, fmt.Errorf("kube-proxy: /configz: %w", err)
	}
	c, ok := cz["kubeproxy.config.k8s.io"]
	if !ok {
		return nil, fmt.Errorf("kube-proxy: /configz has no kubeproxy.config.k8s.io section")
	}
	return c.NodePortAddresses, nil
}

// ClusterCIDRs reads clusterCIDR from /configz (a comma-separated list in
// dual-stack clusters; nil when kube-proxy has none).
func (k KubeProxyHTTP) ClusterCIDRs(ctx context.Context) ([]string, error) {
	code, b, err := k.get(ctx, k.MetricsURL+"/configz")
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("kube-proxy: /configz: HTTP %d", code)
	}
	return ParseKubeProxyClusterCIDRs(b)
}

// ParseKubeProxyClusterCIDRs returns clusterCIDR from kube-proxy's /configz.
func ParseKubeProxyClusterCIDRs(b []byte) ([]string, error) {
	var cz map[string]struct {
		ClusterCIDR string `json:"clusterCIDR"`
	}
	if err := json.Unmarshal(b, &cz); err != nil {
		return nil, fmt.Errorf("kube-proxy: /configz: %w", err)
	}
	c, ok := cz["kubeproxy.config.k8s.io"]
	if !ok {
		return nil, fmt.Errorf("kube-proxy: /configz has no kubeproxy.config.k8s.io section")
	}
	var out []string
	for _, s := range strings.Split(c.ClusterCIDR, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out, nil
}

// Sync reads the sync timestamps from /metrics.
func (k KubeProxyHTTP) Sync(ctx context.Context) (KubeProxySync, error) {
	code, b, err := k.get(ctx, k.MetricsURL+"/metrics")
	if err != nil {
		return KubeProxySync{}, err
	}
	if code != http.StatusOK {
		return KubeProxySync{}, fmt.Errorf("kube-proxy: /metrics: HTTP %d", code)
	}
	return ParseKubeProxyMetrics(bytes.NewReader(b))
}

// ParseKubeProxyMetrics picks kube-proxy's sync timestamps and restore
// failures out of its Prometheus text output.
func ParseKubeProxyMetrics(r io.Reader) (KubeProxySync, error) {
	s := KubeProxySync{LastSync: map[string]time.Time{}, LastQueued: map[string]time.Time{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "kubeproxy_sync_proxy_rules_") {
			continue
		}
		name, rest, _ := strings.Cut(line, " ")
		labels := ""
		if i := strings.IndexByte(name, '{'); i >= 0 {
			if j := strings.LastIndexByte(line, '}'); j > i {
				name, labels, rest = line[:i], line[i:j+1], strings.TrimSpace(line[j+1:])
			}
		}
		v, err := strconv.ParseFloat(strings.Fields(rest + " 0")[0], 64)
		if err != nil {
			continue
		}
		family := "IPv4"
		if strings.Contains(labels, `"IPv6"`) {
			family = "IPv6"
		}
		ts := time.Unix(0, int64(v*1e9))
		switch name {
		case "kubeproxy_sync_proxy_rules_last_timestamp_seconds":
			s.LastSync[family] = ts
		case "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds":
			s.LastQueued[family] = ts
		case "kubeproxy_sync_proxy_rules_iptables_restore_failures_total", "kubeproxy_sync_proxy_rules_nftables_sync_failures_total":
			s.RestoreFailures += v
		}
	}
	if err := sc.Err(); err != nil {
		return s, fmt.Errorf("kube-proxy: read metrics: %w", err)
	}
	return s, nil
}

// readerCommand is a command whose pipes Wait gives up on a second after
// it is killed, even if a child of it still holds them.
func readerCommand(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = time.Second
	return cmd
}

// closeOnDone closes a command's stdout when ctx ends, so a parser blocked
// on a pipe that a leftover child keeps open returns.
func closeOnDone(ctx context.Context, out io.Closer) (stop func() bool) {
	return context.AfterFunc(ctx, func() { _ = out.Close() })
}
