package harness

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

func writeKubeconfig(path, server string, caPEM []byte, token string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["node-doctor-e2e"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos["user"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["node-doctor-e2e"] = &clientcmdapi.Context{Cluster: "node-doctor-e2e", AuthInfo: "user"}
	cfg.CurrentContext = "node-doctor-e2e"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	return nil
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", filepath.Base(path), err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	return nil
}

// writeKubeletConfig writes the KubeletConfiguration verified on this kind
// of machine (REAL-NODE.md): cgroupfs, swap and cgroup v1 allowed, open
// authn/authz (test only, bound to the node IP), no image GC of the
// locally built images, and no negative oom_score_adj.
func writeKubeletConfig(path, wd string, o Options, criEndpoint string) error {
	return writeJSON(path, map[string]any{
		"apiVersion":                  "kubelet.config.k8s.io/v1beta1",
		"kind":                        "KubeletConfiguration",
		"cgroupDriver":                "cgroupfs",
		"failSwapOn":                  false,
		"failCgroupV1":                false,
		"containerRuntimeEndpoint":    criEndpoint,
		"hairpinMode":                 "hairpin-veth",
		"address":                     o.NodeIP,
		"port":                        kubeletPort,
		"readOnlyPort":                0,
		"healthzBindAddress":          "127.0.0.1",
		"healthzPort":                 kubeletHealthz,
		"oomScoreAdj":                 0,
		"podLogsDir":                  filepath.Join(wd, "pod-logs"),
		"resolvConf":                  "/etc/resolv.conf",
		"imageGCHighThresholdPercent": 100,
		"imageGCLowThresholdPercent":  99,
		"evictionHard": map[string]string{
			"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
		},
		"serializeImagePulls":       false,
		"nodeStatusUpdateFrequency": "4s",
		"shutdownGracePeriod":       "0s",
		"authentication": map[string]any{
			"anonymous": map[string]any{"enabled": true},
			"webhook":   map[string]any{"enabled": false},
		},
		"authorization": map[string]any{"mode": "AlwaysAllow"},
	})
}

// writeKubeProxyConfig: conntrack and localnet settings are zeroed so
// kube-proxy leaves those host sysctls alone; metrics/healthz stay on
// loopback and NodePorts on the node IP only.
func writeKubeProxyConfig(path string, o Options, kubeconfig string) error {
	return writeJSON(path, map[string]any{
		"apiVersion":         "kubeproxy.config.k8s.io/v1alpha1",
		"kind":               "KubeProxyConfiguration",
		"mode":               o.ProxyMode,
		"clientConnection":   map[string]any{"kubeconfig": kubeconfig},
		"hostnameOverride":   o.NodeName,
		"healthzBindAddress": fmt.Sprintf("127.0.0.1:%d", proxyHealthz),
		"metricsBindAddress": fmt.Sprintf("127.0.0.1:%d", proxyMetrics),
		"clusterCIDR":        o.PodCIDR,
		"detectLocalMode":    "ClusterCIDR",
		"nodePortAddresses":  []string{o.NodeIP + "/32"},
		"oomScoreAdj":        0,
		"conntrack": map[string]any{
			"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s",
		},
		"iptables": map[string]any{"localhostNodePorts": false, "minSyncPeriod": "1s", "syncPeriod": "30s"},
		"nftables": map[string]any{"minSyncPeriod": "1s", "syncPeriod": "30s"},
	})
}

// httpOK returns a readiness probe for a local endpoint answering 200
// (and, when want is set, exactly that body). TLS is not verified: these
// are components' self-signed loopback endpoints.
func httpOK(url string, want []byte) func(context.Context) (bool, error) {
	client := &http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, //nolint:gosec // loopback health checks
	}
	return func(ctx context.Context) (bool, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if resp.StatusCode != http.StatusOK {
			return false, fmt.Errorf("GET %s: %s: %s", url, resp.Status, bytes.TrimSpace(body))
		}
		if want != nil && !bytes.Equal(bytes.TrimSpace(body), want) {
			return false, fmt.Errorf("GET %s: got %q, want %q", url, body, want)
		}
		return true, nil
	}
}

func nodeReady(ctx context.Context, cs kubernetes.Interface, name string) (bool, error) {
	n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return false, err
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			if c.Status == corev1.ConditionTrue {
				return true, nil
			}
			return false, fmt.Errorf("node %s Ready=%s: %s: %s", name, c.Status, c.Reason, c.Message)
		}
	}
	return false, fmt.Errorf("node %s has no Ready condition yet", name)
}

func defaultSAReady(ctx context.Context, cs kubernetes.Interface) (bool, error) {
	if _, err := cs.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{}); err != nil {
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return false, err
	}
	if _, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "kube-root-ca.crt", metav1.GetOptions{}); err != nil {
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}
