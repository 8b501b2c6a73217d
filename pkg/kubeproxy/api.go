package kubeproxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
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
