//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/node-doctor/node-doctor/test/harness"
)

const deployNS = "node-doctor"

// buildStaticAgent builds ./cmd/agent as the Dockerfile does (static), or
// returns $NODE_DOCTOR_AGENT_BIN, a static binary built elsewhere (e.g.
// from a clean checkout while the work tree is mid-change).
func buildStaticAgent(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("NODE_DOCTOR_AGENT_BIN"); bin != "" {
		return bin
	}
	bin := filepath.Join(t.TempDir(), "node-doctor")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags",
		"-s -w -X github.com/node-doctor/node-doctor/pkg/version.Version=e2e", "-o", bin, "./cmd/agent")
	cmd.Dir = repoRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/agent: %v\n%s", err, out)
	}
	return bin
}

// deployOverlay writes a kustomization that takes deploy/ as its base and
// only adapts it to the harness node: the locally built image (never
// pulled), and the node's CRI socket and CNI config dir, which the harness
// keeps under its work dir instead of /run/containerd and /etc/cni/net.d
// (the socket file takes the place of the base's /run mount, whose
// HostToContainer propagation this VM's private mounts refuse), and the
// API server's address: the harness blackholes the service range on
// the node, so a hostNetwork pod cannot reach the kubernetes Service's
// ClusterIP (connect: invalid argument) and in-cluster config is pointed
// at the API server's own address instead; the kubelet's config file (in
// the work dir) is mounted at its path under /host, as a user's overlay
// mounts their kubelet's --config. components are paths under
// deploy/ of kustomize components to add (e.g. components/unprivileged).
func deployOverlay(t *testing.T, c *harness.Cluster, components ...string) string {
	t.Helper()
	base := deployDir(t)
	dir := t.TempDir()
	rel, err := filepath.Rel(dir, base) // kustomize refuses an absolute base
	if err != nil {
		t.Fatal(err)
	}
	var comps strings.Builder
	if len(components) > 0 {
		comps.WriteString("components:\n")
		for _, cp := range components {
			r, err := filepath.Rel(dir, filepath.Join(base, cp))
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&comps, "  - %s\n", r)
		}
	}
	kust := fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - %s
%simages:
  - name: ghcr.io/node-doctor/node-doctor
    newName: %s
    newTag: %s
`, rel, comps.String(), strings.Split(harness.AgentImage, ":")[0], strings.Split(harness.AgentImage, ":")[1])
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(kust), 0o644); err != nil {
		t.Fatal(err)
	}
	// Find the volumes and mounts to patch by name, not by a hard-coded
	// index, in the DaemonSet as the base and components render it.
	var ds map[string]any
	for _, o := range renderObjects(t, dir) {
		if o["kind"] == "DaemonSet" {
			ds = o
		}
	}
	spec := ds["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
	volIdx := map[string]int{}
	for i, v := range spec["volumes"].([]any) {
		volIdx[v.(map[string]any)["name"].(string)] = i
	}
	mountIdx := map[string]int{}
	for i, m := range spec["containers"].([]any)[0].(map[string]any)["volumeMounts"].([]any) {
		mountIdx[m.(map[string]any)["name"].(string)] = i
	}
	for _, n := range []string{"run", "cni-conf"} {
		if _, ok := volIdx[n]; !ok {
			t.Fatalf("the base DaemonSet has no volume %q", n)
		}
	}
	sock := c.Containerd.Address
	// The kubelet's config file at its own path under /host, as
	// docs/deploy.md says to patch it in for a kubelet's --config.
	kubeletCfg := c.KubeletConfig
	if kubeletCfg == "" {
		kubeletCfg = filepath.Join(c.WorkDir, "kubelet.json")
	}
	cniConf := filepath.Join(filepath.Dir(sock), "net.d")
	patch := fmt.Sprintf(`[
  {"op": "replace", "path": "/spec/template/spec/containers/0/imagePullPolicy", "value": "Never"},
  {"op": "replace", "path": "/spec/template/spec/volumes/%d/hostPath", "value": {"path": %q, "type": "Socket"}},
  {"op": "replace", "path": "/spec/template/spec/containers/0/volumeMounts/%d", "value": {"name": "run", "mountPath": "/host/run/containerd/containerd.sock", "readOnly": true}},
  {"op": "replace", "path": "/spec/template/spec/volumes/%d/hostPath", "value": {"path": %q, "type": "Directory"}},
  {"op": "add", "path": "/spec/template/spec/containers/0/env/-", "value": {"name": "KUBERNETES_SERVICE_HOST", "value": %q}},
  {"op": "add", "path": "/spec/template/spec/containers/0/env/-", "value": {"name": "KUBERNETES_SERVICE_PORT", "value": "6443"}},
  {"op": "add", "path": "/spec/template/spec/volumes/-", "value": {"name": "kubelet-config", "hostPath": {"path": %q, "type": "File"}}},
  {"op": "add", "path": "/spec/template/spec/containers/0/volumeMounts/-", "value": {"name": "kubelet-config", "mountPath": %q, "readOnly": true}}
]`, volIdx["run"], sock, mountIdx["run"], volIdx["cni-conf"], cniConf, c.NodeIP, kubeletCfg, "/host"+kubeletCfg)
	kust += `patches:
  - target: {kind: DaemonSet, name: node-doctor}
    path: harness-patch.json
`
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(kust), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "harness-patch.json"), []byte(patch), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// importAgentImage builds the agent image from bin with deploy/image's
// script and imports it into the node's containerd.
func importAgentImage(ctx context.Context, t *testing.T, c *harness.Cluster, bin string) {
	t.Helper()
	img, err := harness.BuildAgentImage(ctx, t.TempDir(), harness.AgentImageSpec{
		Binary: bin, RootfsScript: filepath.Join(deployDir(t), "image", "rootfs.sh"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := harness.ImportImage(ctx, c.Containerd.Address, img); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(img); err == nil {
		t.Logf("agent image %s: %.1f MiB OCI tarball", harness.AgentImage, float64(st.Size())/(1<<20))
	}
	// kube-proxy's iptables-restore -w creates /run/xtables.lock; remove
	// it afterwards if it was not there.
	if _, err := os.Stat("/run/xtables.lock"); errors.Is(err, os.ErrNotExist) {
		t.Cleanup(func() { _ = os.Remove("/run/xtables.lock") })
	}
}

// bindPods plays the scheduler the harness does not run: it binds the
// DaemonSet's pods, which the DaemonSet controller creates with a node
// affinity for their node but leaves to a scheduler to bind, to that node.
func bindPods(ctx context.Context, t *testing.T, c *harness.Cluster) {
	var mu sync.Mutex
	bound := map[string]bool{}
	go func() {
		for ctx.Err() == nil {
			pods, err := c.Client.CoreV1().Pods(deployNS).List(ctx, metav1.ListOptions{})
			if err == nil {
				for _, p := range pods.Items {
					mu.Lock()
					done := bound[string(p.UID)]
					mu.Unlock()
					if p.Spec.NodeName != "" || done || p.DeletionTimestamp != nil {
						continue
					}
					err := c.Client.CoreV1().Pods(deployNS).Bind(ctx, &corev1.Binding{
						ObjectMeta: metav1.ObjectMeta{Name: p.Name, UID: p.UID},
						Target:     corev1.ObjectReference{Kind: "Node", Name: c.NodeName},
					}, metav1.CreateOptions{})
					if err == nil {
						t.Logf("bound pod %s to %s (no scheduler in the harness)", p.Name, c.NodeName)
						mu.Lock()
						bound[string(p.UID)] = true
						mu.Unlock()
					}
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()
}

// agentPod returns the DaemonSet's pod on the node, or nil.
func agentPod(ctx context.Context, t *testing.T, c *harness.Cluster) *corev1.Pod {
	t.Helper()
	pods, err := c.Client.CoreV1().Pods(deployNS).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=node-doctor"})
	if err != nil {
		t.Fatalf("list agent pods: %v", err)
	}
	for i := range pods.Items {
		if pods.Items[i].DeletionTimestamp == nil {
			return &pods.Items[i]
		}
	}
	return nil
}

// podLog reads the agent container's log as kubelet writes it on the node
// (the harness's kubelet keeps pod logs in <work dir>/pod-logs).
func podLog(t *testing.T, c *harness.Cluster, p *corev1.Pod) string {
	t.Helper()
	dir := fmt.Sprintf("%s_%s_%s", p.Namespace, p.Name, p.UID)
	var matches []string
	for _, root := range []string{filepath.Join(c.WorkDir, "pod-logs"), "/var/log/pods"} {
		m, _ := filepath.Glob(filepath.Join(root, dir, "node-doctor", "*.log"))
		matches = append(matches, m...)
	}
	var b strings.Builder
	for _, m := range matches {
		data, err := os.ReadFile(m)
		if err == nil {
			b.Write(data)
		}
	}
	return b.String()
}

// hostAgentProcs lists node-doctor processes on the host, with whether
// each runs in a kubepods cgroup (in a pod) or not.
func hostAgentProcs() map[int]bool {
	out := map[int]bool{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil || strings.TrimSpace(string(comm)) != "node-doctor" {
			continue
		}
		cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
		out[pid] = strings.Contains(string(cg), "kubepods")
	}
	return out
}

// stubMonitoringCRDs creates the Prometheus Operator CRDs as schemaless
// stand-ins (no registry or network for the real ones), so the server-side
// dry-run of deploy/prometheus-operator/ checks kinds, API versions, scope
// and names; promtool checks the rules themselves.
func stubMonitoringCRDs(ctx context.Context, t *testing.T, c *harness.Cluster) {
	t.Helper()
	var b strings.Builder
	for _, k := range []struct{ kind, plural string }{{"PodMonitor", "podmonitors"}, {"PrometheusRule", "prometheusrules"}} {
		fmt.Fprintf(&b, `---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: %[2]s.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {kind: %[1]s, plural: %[2]s, singular: %[3]s, listKind: %[1]sList}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
`, k.kind, k.plural, strings.ToLower(k.kind))
	}
	f := filepath.Join(t.TempDir(), "crds.yaml")
	if err := os.WriteFile(f, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := kubectl(ctx, c.Kubeconfig, "apply", "-f", f); err != nil {
		t.Fatal(err)
	}
	if _, err := kubectl(ctx, c.Kubeconfig, "wait", "--for=condition=Established", "--timeout=60s",
		"crd/podmonitors.monitoring.coreos.com", "crd/prometheusrules.monitoring.coreos.com"); err != nil {
		t.Fatal(err)
	}
}

// prometheus is a real Prometheus on loopback discovering the agent pods
// through the Kubernetes API and their prometheus.io annotations.
type prometheus struct {
	url string
	cmd *exec.Cmd
}

// prometheusBinary is $NODE_DOCTOR_PROMETHEUS or the prometheus on PATH.
// Debian 12's prometheus (2.42+ds) is built without Kubernetes service
// discovery; hack/prometheus/build.sh builds one that has it, and make e2e
// passes it.
func prometheusBinary() string {
	if p := os.Getenv("NODE_DOCTOR_PROMETHEUS"); p != "" {
		return p
	}
	return "prometheus"
}

// startPrometheus runs a real Prometheus on loopback, its data in a temp
// dir, stopped in t.Cleanup, scraping with the bearer token in tokenFile.
// An error says why it could not start.
func startPrometheus(t *testing.T, c *harness.Cluster, rules, tokenFile string) (*prometheus, error) {
	t.Helper()
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	// The usual annotation-driven pod job (docs/deploy.md), limited to the
	// node-doctor namespace, with the node's name as the `node` label, over
	// HTTPS with a token allowed to get /metrics.
	cfg := fmt.Sprintf(`global:
  scrape_interval: 5s
  evaluation_interval: 5s
rule_files: [%q]
scrape_configs:
  - job_name: node-doctor
    kubernetes_sd_configs:
      - role: pod
        kubeconfig_file: %q
        namespaces:
          names: [%s]
    authorization:
      credentials_file: %q
    tls_config:
      insecure_skip_verify: true
    relabel_configs:
      - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape]
        action: keep
        regex: "true"
      - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scheme]
        action: replace
        target_label: __scheme__
        regex: (https?)
      - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_path]
        action: replace
        target_label: __metrics_path__
        regex: (.+)
      - source_labels: [__address__, __meta_kubernetes_pod_annotation_prometheus_io_port]
        action: replace
        regex: ([^:]+)(?::\d+)?;(\d+)
        replacement: $1:$2
        target_label: __address__
      - source_labels: [__meta_kubernetes_pod_node_name]
        target_label: node
      - source_labels: [__meta_kubernetes_namespace]
        target_label: namespace
      - source_labels: [__meta_kubernetes_pod_name]
        target_label: pod
`, rules, c.Kubeconfig, deployNS, tokenFile)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "prometheus.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	bin := prometheusBinary()
	cmd := exec.Command(bin, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=info")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	p := &prometheus{url: "http://" + addr, cmd: cmd}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("prometheus log:\n%s", b)
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-done:
			return nil, fmt.Errorf("%s exited: %s", bin, harness.Tail(logPath, 5))
		default:
		}
		if resp, err := http.Get(p.url + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s not ready after 60s: %s", bin, harness.Tail(logPath, 5))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

// query runs an instant query through Prometheus' HTTP API.
func (p *prometheus) query(q string) ([]promSample, error) {
	resp, err := http.Get(p.url + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []promSample `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("query %s: %w: %s", q, err, body)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("query %s: %s", q, r.Error)
	}
	return r.Data.Result, nil
}

func (p *prometheus) waitQuery(t *testing.T, q string, timeout time.Duration, ok func([]promSample) bool) []promSample {
	t.Helper()
	var res []promSample
	waitFor(t, "prometheus: "+q, timeout, func() (bool, string) {
		var err error
		res, err = p.query(q)
		if err != nil {
			return false, err.Error()
		}
		return ok(res), fmt.Sprint(res)
	})
	return res
}

// TestDeployDaemonSet installs node-doctor the way a user does — `kubectl
// apply -k` of deploy/ (the image swapped for one built from this machine's
// files, the CRI socket and CNI dir pointed at the harness's) — on the real
// node, and checks: every manifest passes a server-side dry-run; the
// DaemonSet's pod becomes Ready; node-doctor's conditions appear on the node
// only once that pod runs, written by it (its log says so; no node-doctor
// runs outside a pod); turning hairpin off on a pod's port shows up in the
// node's conditions; a real Prometheus discovers the pod through its
// annotations, scrapes it, and answers queries with the node's name
// attached, and the matching alert's expression holds on the broken node.
// With NODE_DOCTOR_MEASURE=<duration> it then measures the pod's
// steady-state CPU and memory (docs/deploy.md).
func TestDeployDaemonSet(t *testing.T) {
	harness.RequireRoot(t)
	ensurePrometheus(t)
	rules := prometheusRuleGroups(t)
	bin := buildStaticAgent(t)
	// The API server admits system-node-critical pods only where a quota
	// covers them, as GKE's does: deploy/ must bring its own.
	c := harness.StartT(t, harness.Options{ProxyMode: "iptables", CriticalPodsNeedQuota: true})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()

	importAgentImage(ctx, t, c, bin)

	// Server-side dry-run of every manifest. The namespace must exist for
	// the namespaced objects' dry-run, so it is created first.
	if _, err := kubectl(ctx, c.Kubeconfig, "apply", "--dry-run=server", "-f", filepath.Join(deployDir(t), "namespace.yaml")); err != nil {
		t.Fatal(err)
	}
	if _, err := kubectl(ctx, c.Kubeconfig, "create", "namespace", deployNS); err != nil {
		t.Fatal(err)
	}
	requireCriticalQuota(ctx, t, c)
	out, err := kubectl(ctx, c.Kubeconfig, "apply", "-k", deployDir(t), "--dry-run=server")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("dry-run deploy/:\n%s", out)
	stubMonitoringCRDs(ctx, t, c)
	out, err = kubectl(ctx, c.Kubeconfig, "apply", "-k", filepath.Join(deployDir(t), "prometheus-operator"), "--dry-run=server")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("dry-run deploy/prometheus-operator/:\n%s", out)

	// Before the install: none of node-doctor's conditions on the node, and
	// no node-doctor process anywhere.
	for _, typ := range []string{"NetworkConfigProblem", "ContainerRuntimeProblem"} {
		if cond := condition(ctx, t, c, typ); cond != nil {
			t.Fatalf("%s on the node before node-doctor is installed: %s", typ, condString(cond))
		}
	}
	if procs := hostAgentProcs(); len(procs) > 0 {
		t.Fatalf("node-doctor processes already running on the host: %v", procs)
	}

	// A pod on the bridge whose port the test breaks later.
	_, port := podOnBridge(ctx, t, c, "deploy")

	// Install.
	overlay := deployOverlay(t, c)
	bindCtx, stopBinding := context.WithCancel(ctx)
	defer stopBinding()
	bindPods(bindCtx, t, c)
	applied := time.Now()
	pod := installAgent(ctx, t, c, overlay)
	if len(pod.OwnerReferences) == 0 || pod.OwnerReferences[0].Kind != "DaemonSet" {
		t.Errorf("agent pod %s is not owned by the DaemonSet: %v", pod.Name, pod.OwnerReferences)
	}
	t.Logf("agent pod %s Ready %s after apply", pod.Name, time.Since(applied).Round(time.Second))
	ds, err := c.Client.AppsV1().DaemonSets(deployNS).Get(ctx, "node-doctor", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("DaemonSet: desired %d, ready %d", ds.Status.DesiredNumberScheduled, ds.Status.NumberReady)
	// The quota admitted the pod and counts it: its scope matched the class.
	waitFor(t, "the critical-pods quota counting the agent's pod", time.Minute, func() (bool, string) {
		rq, err := c.Client.CoreV1().ResourceQuotas(deployNS).Get(ctx, "node-doctor-critical-pods", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		used := rq.Status.Used[corev1.ResourcePods]
		return used.Value() == 1, fmt.Sprintf("used %v", rq.Status.Used)
	})
	t.Log("the critical-pods quota admitted and counts the agent's pod")

	// The pod writes the conditions: they appear after it started, and its
	// log shows it reporting through in-cluster config.
	owned := []string{"NetworkConfigProblem", "ContainerRuntimeProblem", "KernelDeadlock", "ReadonlyFilesystem", "FrequentUnregisterNetDevice"}
	waitFor(t, "node-doctor's conditions on the node", 2*time.Minute, func() (bool, string) {
		var missing []string
		for _, typ := range owned {
			if condition(ctx, t, c, typ) == nil {
				missing = append(missing, typ)
			}
		}
		return len(missing) == 0, fmt.Sprintf("missing %v", missing)
	})
	started := pod.Status.StartTime.Time
	for _, typ := range owned {
		cond := condition(ctx, t, c, typ)
		t.Logf("condition %s", condString(cond))
		if cond.LastTransitionTime.Time.Before(started.Add(-time.Second)) {
			t.Errorf("%s dates from %s, before the agent pod started (%s)", typ, cond.LastTransitionTime, started)
		}
		if cond.Status == corev1.ConditionUnknown {
			t.Errorf("%s is Unknown from the pod: a check cannot run with the DaemonSet's mounts and capabilities: %s", typ, condString(cond))
		}
	}
	log := podLog(t, c, pod)
	if !strings.Contains(log, "reporting to Kubernetes") || !strings.Contains(log, fmt.Sprintf("https://%s:6443", c.NodeIP)) {
		t.Errorf("the pod's log does not show in-cluster reporting:\n%s", log)
	}
	if !strings.Contains(log, "node condition changed") {
		t.Errorf("the pod's log does not show it writing conditions:\n%s", log)
	}
	for pid, inPod := range hostAgentProcs() {
		if !inPod {
			t.Errorf("node-doctor pid %d runs outside a pod", pid)
		}
	}

	// Only a token allowed to get /metrics reads them.
	tokenFile := checkSecureMetrics(ctx, t, c)

	// A real Prometheus finds the pod through its annotations and scrapes
	// it over HTTPS with that token.
	prom, promErr := startPrometheus(t, c, rules, tokenFile)
	if promErr != nil {
		// make e2e passes the one hack/prometheus builds: it must work.
		if os.Getenv("NODE_DOCTOR_PROMETHEUS") != "" {
			t.Fatalf("prometheus: %v", promErr)
		}
		t.Logf("NOT RUN: the Prometheus part: %v", promErr)
	}
	if prom != nil {
		res := prom.waitQuery(t, fmt.Sprintf(`node_doctor_check_status{node=%q,status="ok"} == 1`, c.NodeName), 90*time.Second,
			func(r []promSample) bool { return len(r) > 0 })
		for _, s := range res {
			if s.Metric["pod"] != pod.Name || s.Metric["namespace"] != deployNS {
				t.Errorf("series %v is not from the agent pod %s", s.Metric, pod.Name)
			}
		}
		t.Logf("prometheus: %d checks ok on %s, e.g. %v", len(res), c.NodeName, res[0].Metric)
		if r, err := prom.query(`up{job="node-doctor"}`); err != nil || len(r) != 1 {
			t.Errorf("up{job=node-doctor} = %v, %v; want one target", r, err)
		}
		if _, body, err := scrape(ctx, http.DefaultClient, prom.url+"/api/v1/targets?state=active", ""); err != nil ||
			!strings.Contains(body, `"scrapeUrl":"https://`+net.JoinHostPort(c.NodeIP, "19720")+`/metrics"`) {
			t.Errorf("prometheus targets (%v): want the agent scraped over https:\n%.1000s", err, body)
		}
	}

	// Break the node: hairpin off on the web pod's port.
	setHairpin(t, port, false)
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(port); err == nil {
			_ = netlink.LinkSetHairpin(l, true)
		}
	})
	broke := time.Now()
	waitFor(t, "NetworkConfigProblem=True HairpinModeOff from the pod", 3*time.Minute, func() (bool, string) {
		cond := condition(ctx, t, c, "NetworkConfigProblem")
		return cond != nil && cond.Status == corev1.ConditionTrue && cond.Reason == "HairpinModeOff", condString(cond)
	})
	t.Logf("HairpinModeOff on the node %s after the break: %s", time.Since(broke).Round(time.Second), condString(condition(ctx, t, c, "NetworkConfigProblem")))
	if log := podLog(t, c, pod); !strings.Contains(log, "HairpinModeOff") {
		t.Errorf("the pod's log does not show the HairpinModeOff change:\n%s", log)
	}
	desc, err := kubectl(ctx, c.Kubeconfig, "describe", "node", c.NodeName)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(desc, "HairpinModeOff") || !strings.Contains(desc, port) {
		t.Errorf("kubectl describe node does not show HairpinModeOff on %s:\n%s", port, desc)
	}
	// The alert's expression holds for this node, and the rule is pending.
	if prom != nil {
		prom.waitQuery(t, fmt.Sprintf(`node_doctor_kube_node_condition{condition="NetworkConfigProblem",status="True",node=%q} == 1`, c.NodeName),
			60*time.Second, func(r []promSample) bool { return len(r) == 1 })
		prom.waitQuery(t, fmt.Sprintf(`ALERTS{alertname="NodeDoctorNetworkConfigProblem",node=%q}`, c.NodeName),
			60*time.Second, func(r []promSample) bool { return len(r) == 1 && r[0].Metric["alertstate"] == "pending" })
	}

	// Fix it again.
	setHairpin(t, port, true)
	waitFor(t, "NetworkConfigProblem=False after the fix", 3*time.Minute, func() (bool, string) {
		cond := condition(ctx, t, c, "NetworkConfigProblem")
		return cond != nil && cond.Status == corev1.ConditionFalse, condString(cond)
	})

	if d := os.Getenv("NODE_DOCTOR_MEASURE"); d != "" {
		dur, err := time.ParseDuration(d)
		if err != nil {
			t.Fatalf("NODE_DOCTOR_MEASURE: %v", err)
		}
		measureAgent(t, dur)
	}

	// The pod is still the one that started, never restarted.
	p, err := c.Client.CoreV1().Pods(deployNS).Get(ctx, pod.Name, metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	if p != nil && len(p.Status.ContainerStatuses) > 0 && p.Status.ContainerStatuses[0].RestartCount > 0 {
		t.Errorf("agent restarted %d times:\n%s", p.Status.ContainerStatuses[0].RestartCount, podLog(t, c, p))
	}
	if promErr != nil {
		t.Skipf("everything but the Prometheus part passed; the Prometheus part did not run: %v (run it through make e2e, or set NODE_DOCTOR_PROMETHEUS to a prometheus with Kubernetes service discovery: hack/prometheus/build.sh print-bin)", promErr)
	}
}

// measureAgent samples the agent process (the one node-doctor in a
// kubepods cgroup) for dur: CPU from utime+stime, memory from VmRSS and
// from its memory cgroup's working set (usage minus inactive file).
func measureAgent(t *testing.T, dur time.Duration) {
	t.Helper()
	var pid int
	for p, inPod := range hostAgentProcs() {
		if inPod {
			pid = p
		}
	}
	if pid == 0 {
		t.Fatal("measure: no node-doctor process in a pod")
	}
	clkTck := 100.0 // USER_HZ on Linux
	cpuTicks := func() float64 {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			t.Fatalf("measure: %v", err)
		}
		f := strings.Fields(string(b)[strings.LastIndex(string(b), ")")+2:])
		u, _ := strconv.ParseFloat(f[11], 64)
		s, _ := strconv.ParseFloat(f[12], 64)
		return u + s
	}
	rss := func() float64 {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "VmRSS:") {
				kb, _ := strconv.ParseFloat(strings.Fields(l)[1], 64)
				return kb / 1024
			}
		}
		return 0
	}
	memcg := ""
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid)); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if parts := strings.SplitN(l, ":", 3); len(parts) == 3 && parts[1] == "memory" {
				memcg = filepath.Join("/sys/fs/cgroup/memory", parts[2])
			}
		}
	}
	workingSet := func() float64 {
		if memcg == "" {
			return 0
		}
		u, _ := os.ReadFile(filepath.Join(memcg, "memory.usage_in_bytes"))
		usage, _ := strconv.ParseFloat(strings.TrimSpace(string(u)), 64)
		st, _ := os.ReadFile(filepath.Join(memcg, "memory.stat"))
		for _, l := range strings.Split(string(st), "\n") {
			if f := strings.Fields(l); len(f) == 2 && f[0] == "total_inactive_file" {
				v, _ := strconv.ParseFloat(f[1], 64)
				usage -= v
			}
		}
		return usage / (1 << 20)
	}
	t.Logf("measure: pid %d, memory cgroup %s, %s", pid, memcg, dur)
	start, t0 := cpuTicks(), time.Now()
	var maxRSS, maxWS, sumRSS float64
	var maxCPU float64
	n := 0
	prev, prevT := start, t0
	for time.Since(t0) < dur {
		time.Sleep(10 * time.Second)
		now, nowT := cpuTicks(), time.Now()
		if c := (now - prev) / clkTck / nowT.Sub(prevT).Seconds() * 1000; c > maxCPU {
			maxCPU = c
		}
		prev, prevT = now, nowT
		r, w := rss(), workingSet()
		sumRSS += r
		n++
		if r > maxRSS {
			maxRSS = r
		}
		if w > maxWS {
			maxWS = w
		}
	}
	avgCPU := (prev - start) / clkTck / prevT.Sub(t0).Seconds() * 1000
	t.Logf("measure: over %s: CPU avg %.1fm, max over 10s %.1fm; RSS avg %.1f MiB, max %.1f MiB; cgroup working set max %.1f MiB",
		prevT.Sub(t0).Round(time.Second), avgCPU, maxCPU, sumRSS/float64(n), maxRSS, maxWS)
}

// installAgent applies a kustomize overlay, removes it when the test ends,
// and returns the DaemonSet's pod once it is Ready.
func installAgent(ctx context.Context, t *testing.T, c *harness.Cluster, overlay string) *corev1.Pod {
	t.Helper()
	out, err := kubectl(ctx, c.Kubeconfig, "apply", "-k", overlay)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kubectl apply -k %s:\n%s", overlay, out)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if out, err := kubectl(ctx, c.Kubeconfig, "delete", "-k", overlay, "--wait=true", "--timeout=90s"); err != nil {
			t.Logf("uninstall: %v\n%s", err, out)
		}
	})
	var pod *corev1.Pod
	waitFor(t, "the DaemonSet's pod", 60*time.Second, func() (bool, string) {
		pod = agentPod(ctx, t, c)
		return pod != nil, "no pod"
	})
	ready, err := c.WaitForPod(ctx, deployNS, pod.Name, 3*time.Minute, harness.PodRunningReady)
	if err != nil {
		t.Logf("agent log:\n%s", podLog(t, c, pod))
		t.Fatal(err)
	}
	return ready
}

// requireCriticalQuota shows that the harness's API server refuses a
// system-node-critical pod in the namespace before deploy/'s quota is
// there (a server-side dry run), with GKE's message.
func requireCriticalQuota(ctx context.Context, t *testing.T, c *harness.Cluster) {
	t.Helper()
	no := false
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "critical-probe", Namespace: deployNS},
		Spec: corev1.PodSpec{
			PriorityClassName:            "system-node-critical",
			AutomountServiceAccountToken: &no,
			Containers:                   []corev1.Container{{Name: "c", Image: harness.AgentImage}},
		},
	}
	var refused string
	waitFor(t, "a critical pod refused without the quota", time.Minute, func() (bool, string) {
		_, err := c.Client.CoreV1().Pods(deployNS).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err == nil {
			t.Fatal("a system-node-critical pod was admitted without a quota: the harness's admission config is not in force")
		}
		// Until the controller manager creates the default ServiceAccount,
		// admission stops there.
		refused = err.Error()
		return strings.Contains(refused, "insufficient quota to match these scopes"), refused
	})
	t.Logf("without deploy/'s quota: %s", refused)
}
