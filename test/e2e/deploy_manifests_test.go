//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/node-doctor/node-doctor/pkg/checks"
)

// ownedConditions are the node condition types node-doctor's checks
// declare (rule files add more), each of which must have an alert in
// deploy/prometheus-operator/prometheusrule.yaml.
func ownedConditions() []string {
	var out []string
	for _, d := range checks.All(checks.Deps{}) {
		for _, c := range d.Conditions {
			if !slices.Contains(out, c) {
				out = append(out, c)
			}
		}
	}
	return out
}

// criticalConditions are those whose alert is critical: the node cannot
// run pods.
var criticalConditions = []string{"ContainerRuntimeProblem", "KernelDeadlock", "ReadonlyFilesystem", "KubeletUnhealthy"}

func deployDir(t *testing.T) string {
	t.Helper()
	return filepath.Join(repoRoot(t), "deploy")
}

// kubectl runs kubectl with the given kubeconfig ("" for none) and returns
// its stdout; a failure is an error carrying stderr.
func kubectl(ctx context.Context, kubeconfig string, args ...string) (string, error) {
	if kubeconfig != "" {
		args = append([]string{"--kubeconfig", kubeconfig}, args...)
	}
	cmd := exec.CommandContext(ctx, "kubectl", args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// renderObjects renders a kustomization into its objects.
func renderObjects(t *testing.T, dir string) []map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := kubectl(ctx, "", "kustomize", dir)
	if err != nil {
		t.Fatal(err)
	}
	var objs []map[string]any
	dec := yaml.NewDecoder(strings.NewReader(out))
	for {
		var o map[string]any
		if err := dec.Decode(&o); err != nil {
			break
		}
		if o != nil {
			objs = append(objs, o)
		}
	}
	return objs
}

// promtool is $NODE_DOCTOR_PROMTOOL (make e2e passes the one built with
// NODE_DOCTOR_PROMETHEUS by hack/prometheus/build.sh) or the promtool on PATH.
func promtool() string {
	if p := os.Getenv("NODE_DOCTOR_PROMTOOL"); p != "" {
		return p
	}
	return "promtool"
}

// ensurePrometheus makes sure a prometheus and a promtool are there: the
// ones named by NODE_DOCTOR_PROMETHEUS and NODE_DOCTOR_PROMTOOL, or else
// those on PATH, installing Debian's prometheus package when they are
// missing (its server lacks Kubernetes service discovery; its promtool
// serves).
func ensurePrometheus(t *testing.T) {
	t.Helper()
	for _, env := range []string{"NODE_DOCTOR_PROMETHEUS", "NODE_DOCTOR_PROMTOOL"} {
		if p := os.Getenv(env); p != "" {
			if _, err := exec.LookPath(p); err != nil {
				t.Fatalf("%s=%s: %v (make prometheus-bins builds it)", env, p, err)
			}
		}
	}
	if _, err := exec.LookPath(promtool()); err == nil {
		if _, err := exec.LookPath(prometheusBinary()); err == nil {
			return
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("needs Debian's prometheus package (apt-get install prometheus) or root to install it")
	}
	t.Log("installing Debian's prometheus package")
	cmd := exec.Command("apt-get", "install", "-y", "--no-install-recommends", "prometheus")
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("apt-get install prometheus: %v\n%s", err, out)
	}
}

// prometheusRuleGroups writes the PrometheusRule's spec (its rule groups,
// which is what a Prometheus rule file holds) to a file and returns its path.
func prometheusRuleGroups(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(deployDir(t), "prometheus-operator", "prometheusrule.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var pr struct {
		Kind string         `yaml:"kind"`
		Spec map[string]any `yaml:"spec"`
	}
	if err := yaml.Unmarshal(b, &pr); err != nil {
		t.Fatal(err)
	}
	if pr.Kind != "PrometheusRule" {
		t.Fatalf("prometheusrule.yaml holds a %q", pr.Kind)
	}
	out, err := yaml.Marshal(pr.Spec)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "node-doctor.rules.yaml")
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestDeployPrometheusRules checks the PrometheusRule's rules with promtool:
// they load (`promtool check rules`), every owned condition has an alert,
// every alert has a runbook section in docs/alerts.md, and unit tests
// (`promtool test rules`) fire the alerts from synthetic series: conditions
// (named and from rule files), problem findings with and without the
// condition series, check errors, staleness against each check's interval.
func TestDeployPrometheusRules(t *testing.T) {
	ensurePrometheus(t)
	rules := prometheusRuleGroups(t)
	out, err := exec.Command(promtool(), "check", "rules", rules).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	t.Logf("promtool check rules: %s", bytes.TrimSpace(out))

	b, _ := os.ReadFile(rules)
	for _, c := range ownedConditions() {
		if !strings.Contains(string(b), fmt.Sprintf(`condition="%s",status="True"`, c)) {
			t.Errorf("no alert on %s=True", c)
		}
	}

	// Every alert's runbook_url is a section of docs/alerts.md.
	var groups struct {
		Groups []struct {
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &groups); err != nil {
		t.Fatal(err)
	}
	runbook, err := os.ReadFile(filepath.Join(repoRoot(t), "docs", "alerts.md"))
	if err != nil {
		t.Fatal(err)
	}
	const base = "https://github.com/node-doctor/node-doctor/blob/main/docs/alerts.md#"
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			if got := r.Annotations["runbook_url"]; got != base+strings.ToLower(r.Alert) {
				t.Errorf("%s: runbook_url %q, want %q", r.Alert, got, base+strings.ToLower(r.Alert))
			}
			if !regexp.MustCompile(`(?m)^#+ ` + r.Alert + `$`).Match(runbook) {
				t.Errorf("%s: no section in docs/alerts.md", r.Alert)
			}
		}
	}

	// Alerts are checked through the ALERTS series, so the test does not
	// repeat the annotations' wording.
	var series, firing strings.Builder
	for _, c := range ownedConditions() {
		sev := "warning"
		if slices.Contains(criticalConditions, c) {
			sev = "critical"
		}
		fmt.Fprintf(&series, "      - series: 'node_doctor_kube_node_condition{condition=%q,status=\"True\",node=\"n1\",instance=\"i1\"}'\n        values: '1x20'\n", c)
		fmt.Fprintf(&firing, "          - labels: 'ALERTS{alertname=\"NodeDoctor%s\",alertstate=\"firing\",condition=%q,status=\"True\",node=\"n1\",instance=\"i1\",severity=%q}'\n            value: 1\n", c, c, sev)
	}
	// The rule-file condition alerts through the generic alert, and only through it.
	firing.WriteString("          - labels: 'ALERTS{alertname=\"NodeDoctorNodeCondition\",alertstate=\"firing\",condition=\"XfsShutdown\",status=\"True\",node=\"n3\",instance=\"i3\",severity=\"warning\"}'\n            value: 1\n")
	test := fmt.Sprintf(`rule_files: [%q]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
%s      - series: 'node_doctor_kube_node_condition{condition="NetworkConfigProblem",status="False",node="n2",instance="i2"}'
        values: '1x20'
      - series: 'node_doctor_kube_events_dropped_total{reason="queue_full",node="n1",instance="i1"}'
        values: '0 0 0 5 5 5 5 5 5 5 5 5 5 5 5 5 5 5 5 5'
      - series: 'node_doctor_check_status{check="cri-runtime",status="error",node="n1",instance="i1"}'
        values: '1x20'
      # A rule-file condition, which has no alert of its own.
      - series: 'node_doctor_kube_node_condition{condition="XfsShutdown",status="True",node="n3",instance="i3"}'
        values: '1x20'
    promql_expr_test:
      - expr: ALERTS{alertname="NodeDoctorNetworkConfigProblem"}
        eval_time: 4m
        exp_samples:
          - labels: 'ALERTS{alertname="NodeDoctorNetworkConfigProblem",alertstate="pending",condition="NetworkConfigProblem",status="True",node="n1",instance="i1",severity="warning"}'
            value: 1
      - expr: ALERTS{alertstate="firing",alertname!="NodeDoctorEventsDropped"}
        eval_time: 10m
        exp_samples:
%s      - expr: ALERTS{alertname="NodeDoctorEventsDropped"}
        eval_time: 5m
        exp_samples:
          - labels: 'ALERTS{alertname="NodeDoctorEventsDropped",alertstate="firing",reason="queue_full",node="n1",instance="i1",severity="warning"}'
            value: 1
      - expr: ALERTS{alertname="NodeDoctorNodeCondition"}
        eval_time: 10m
        exp_samples:
          - labels: 'ALERTS{alertname="NodeDoctorNodeCondition",alertstate="firing",condition="XfsShutdown",status="True",node="n3",instance="i3",severity="warning"}'
            value: 1
      - expr: ALERTS{alertname="NodeDoctorCheckFailing",alertstate="firing"}
        eval_time: 16m
        exp_samples:
          - labels: 'ALERTS{alertname="NodeDoctorCheckFailing",alertstate="firing",check="cri-runtime",status="error",node="n1",instance="i1",severity="warning"}'
            value: 1
  # Problem findings without reporting to the API (i1: no condition series)
  # and with it (i2: the condition is True and alerts on its own, so the
  # finding does not alert again). A finding that drives no condition
  # alerts either way.
  - interval: 1m
    input_series:
      - series: 'node_doctor_findings{check="kubelet-health",condition="KubeletUnhealthy",reason="KubeletHealthzFailed",severity="problem",node="n1",instance="i1"}'
        values: '1x20'
      - series: 'node_doctor_findings{check="kernel-log",condition="XfsShutdown",reason="XfsShutdown",severity="problem",node="n1",instance="i1"}'
        values: '1x20'
      - series: 'node_doctor_findings{check="hairpin",condition="NetworkConfigProblem",reason="HairpinModeOff",severity="warning",node="n1",instance="i1"}'
        values: '1x20'
      - series: 'node_doctor_findings{check="kubelet-health",condition="KubeletUnhealthy",reason="KubeletHealthzFailed",severity="problem",node="n2",instance="i2"}'
        values: '1x20'
      - series: 'node_doctor_kube_node_condition{condition="KubeletUnhealthy",status="True",node="n2",instance="i2"}'
        values: '1x20'
      - series: 'node_doctor_kube_node_condition{condition="KubeletUnhealthy",status="False",node="n2",instance="i2"}'
        values: '0x20'
      - series: 'node_doctor_findings{check="kernel-log",condition="XfsShutdown",reason="XfsShutdown",severity="problem",node="n2",instance="i2"}'
        values: '1x20'
      - series: 'node_doctor_kube_node_condition{condition="XfsShutdown",status="True",node="n2",instance="i2"}'
        values: '1x20'
      - series: 'node_doctor_findings{check="cri-pods",condition="",reason="PodSandboxStuck",severity="problem",node="n2",instance="i2"}'
        values: '1x20'
    promql_expr_test:
      - expr: ALERTS{alertname="NodeDoctorProblemFound"}
        eval_time: 10m
        exp_samples:
          - labels: 'ALERTS{alertname="NodeDoctorProblemFound",alertstate="firing",check="kubelet-health",condition="KubeletUnhealthy",reason="KubeletHealthzFailed",severity="critical",node="n1",instance="i1"}'
            value: 1
          - labels: 'ALERTS{alertname="NodeDoctorProblemFound",alertstate="firing",check="kernel-log",condition="XfsShutdown",reason="XfsShutdown",severity="warning",node="n1",instance="i1"}'
            value: 1
          - labels: 'ALERTS{alertname="NodeDoctorProblemFound",alertstate="firing",check="cri-pods",condition="",reason="PodSandboxStuck",severity="warning",node="n2",instance="i2"}'
            value: 1
      # On n2 each problem alerts once: through its condition.
      - expr: count by (node, condition) (ALERTS{alertstate="firing",node="n2",condition!=""})
        eval_time: 10m
        exp_samples:
          - labels: '{node="n2",condition="KubeletUnhealthy"}'
            value: 1
          - labels: '{node="n2",condition="XfsShutdown"}'
            value: 1
  # Staleness against each check's own interval: the last runs were at 0.
  # kernel-log (every 10m) is not stale 15 minutes later, and an hourly
  # check not 45 minutes later; hairpin (every 30s) is after 10 minutes.
  - interval: 1m
    input_series:
      - series: 'node_doctor_check_last_run_timestamp_seconds{check="kernel-log",node="n1",instance="i1"}'
        values: '0x50'
      - series: 'node_doctor_check_interval_seconds{check="kernel-log",node="n1",instance="i1"}'
        values: '600x50'
      - series: 'node_doctor_check_last_run_timestamp_seconds{check="hairpin",node="n1",instance="i1"}'
        values: '0x50'
      - series: 'node_doctor_check_interval_seconds{check="hairpin",node="n1",instance="i1"}'
        values: '30x50'
      - series: 'node_doctor_check_last_run_timestamp_seconds{check="hourly",node="n1",instance="i1"}'
        values: '0x50'
      - series: 'node_doctor_check_interval_seconds{check="hourly",node="n1",instance="i1"}'
        values: '3600x50'
    promql_expr_test:
      - expr: ALERTS{alertname="NodeDoctorChecksStale",alertstate="firing"}
        eval_time: 10m
        exp_samples:
          - labels: 'ALERTS{alertname="NodeDoctorChecksStale",alertstate="firing",check="hairpin",node="n1",instance="i1",severity="warning"}'
            value: 1
      - expr: ALERTS{alertname="NodeDoctorChecksStale",check!="hairpin"}
        eval_time: 15m
        exp_samples: []
      - expr: ALERTS{alertname="NodeDoctorChecksStale",check="hourly"}
        eval_time: 45m
        exp_samples: []
      # kernel-log is stale past 3 × 10m + 2m, firing 5m later.
      - expr: ALERTS{alertname="NodeDoctorChecksStale",check="kernel-log",alertstate="firing"}
        eval_time: 40m
        exp_samples:
          - labels: 'ALERTS{alertname="NodeDoctorChecksStale",alertstate="firing",check="kernel-log",node="n1",instance="i1",severity="warning"}'
            value: 1
`, rules, series.String(), firing.String())
	testFile := filepath.Join(t.TempDir(), "rules_test.yaml")
	if err := os.WriteFile(testFile, []byte(test), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool(), "test", "rules", testFile).CombinedOutput(); err != nil {
		t.Fatalf("promtool test rules: %v\n%s\n%s", err, out, test)
	}
}

// TestDeployManifestsRender checks what `kubectl kustomize deploy/` renders
// without a cluster: the objects, the exact RBAC, and the DaemonSet settings
// docs/deploy.md promises.
func TestDeployManifestsRender(t *testing.T) {
	if _, err := exec.LookPath("kubectl"); err != nil {
		t.Skip("kubectl not installed")
	}
	objs := renderObjects(t, deployDir(t))
	kinds := map[string]map[string]any{}
	var reader map[string]any // the ClusterRole for scrapers
	for _, o := range objs {
		if o["kind"] == "ClusterRole" && o["metadata"].(map[string]any)["name"] == "node-doctor-metrics-reader" {
			reader = o
			continue
		}
		kinds[o["kind"].(string)] = o
		if o["kind"] != "Namespace" && o["kind"] != "ClusterRole" && o["kind"] != "ClusterRoleBinding" {
			md := o["metadata"].(map[string]any)
			if md["namespace"] != "node-doctor" {
				t.Errorf("%s %s in namespace %v", o["kind"], md["name"], md["namespace"])
			}
		}
	}
	for _, k := range []string{"Namespace", "ResourceQuota", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet", "Service"} {
		if kinds[k] == nil {
			t.Errorf("no %s rendered", k)
		}
	}
	if len(objs) != 9 {
		t.Errorf("rendered %d objects, want 9", len(objs))
	}
	// Scrapers get /metrics and nothing else.
	if r, _ := yaml.Marshal(reader); string(r) == "null\n" ||
		!strings.Contains(string(r), "rules:\n    - nonResourceURLs:\n        - /metrics\n      verbs:\n        - get\n") ||
		strings.Count(string(r), "verbs:") != 1 || strings.Contains(string(r), "resources:") {
		t.Errorf("ClusterRole node-doctor-metrics-reader:\n%s", r)
	}

	// Exactly the RBAC of docs/kubernetes.md.
	want := map[string]string{
		"/nodes":                          "get,list,watch",
		"/nodes/status":                   "patch",
		"/events":                         "get,create,patch",
		"/services":                       "list,watch",
		"discovery.k8s.io/endpointslices": "list,watch",
		"coordination.k8s.io/leases":      "get,list,watch",
		"/pods":                           "list,watch",
		// Secure metrics: the scraper's token and its permission.
		"authentication.k8s.io/tokenreviews":        "create",
		"authorization.k8s.io/subjectaccessreviews": "create",
	}
	got := map[string]string{}
	for _, r := range kinds["ClusterRole"]["rules"].([]any) {
		rule := r.(map[string]any)
		var verbs []string
		for _, v := range rule["verbs"].([]any) {
			verbs = append(verbs, v.(string))
		}
		for _, g := range rule["apiGroups"].([]any) {
			for _, res := range rule["resources"].([]any) {
				got[g.(string)+"/"+res.(string)] = strings.Join(verbs, ",")
			}
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("ClusterRole rules = %v, want %v", got, want)
	}

	ds, _ := yaml.Marshal(kinds["DaemonSet"])
	for _, s := range []string{
		"hostNetwork: true", "priorityClassName: system-node-critical", "operator: Exists",
		"fieldPath: spec.nodeName", "path: /healthz", "path: /readyz", "readOnlyRootFilesystem: true",
		"privileged: true",
		`prometheus.io/scrape: "true"`, `prometheus.io/port: "19720"`, "prometheus.io/scheme: https",
		"--metrics-secure=true", "--health-address=:19721", "containerPort: 19721", "port: health",
		// cluster-dns: the kubelet's default resolvConf (kubeadm's config
		// file only with its component, below).
		"mountPath: /host/etc/resolv.conf", "path: /etc/resolv.conf",
	} {
		if !strings.Contains(string(ds), s) {
			t.Errorf("DaemonSet lacks %q", s)
		}
	}
	if strings.Contains(string(ds), "hostPID: true") {
		t.Error("DaemonSet uses hostPID")
	}

	checkScheduling(t, "deploy/", kinds["DaemonSet"])
	checkCriticalQuota(t, kinds["ResourceQuota"])

	// The unprivileged component: named capabilities, no kernel-log check.
	ovl := t.TempDir()
	rel, err := filepath.Rel(ovl, deployDir(t))
	if err != nil {
		t.Fatal(err)
	}
	k := fmt.Sprintf("resources: [%s]\ncomponents: [%s/components/unprivileged]\n", rel, rel)
	if err := os.WriteFile(filepath.Join(ovl, "kustomization.yaml"), []byte(k), 0o644); err != nil {
		t.Fatal(err)
	}
	var unpriv []byte
	for _, o := range renderObjects(t, ovl) {
		if o["kind"] == "DaemonSet" {
			checkScheduling(t, "components/unprivileged", o)
		}
		if o["kind"] == "DaemonSet" || o["kind"] == "ConfigMap" {
			b, _ := yaml.Marshal(o)
			unpriv = append(unpriv, b...)
		}
	}
	for _, s := range []string{"privileged: false", "allowPrivilegeEscalation: false", "- NET_ADMIN", "- NET_RAW", "- ALL", "kernel-log:", "enabled: false", "/host/var/log"} {
		if !strings.Contains(string(unpriv), s) {
			t.Errorf("components/unprivileged: DaemonSet/ConfigMap lack %q:\n%s", s, unpriv)
		}
	}
	// No use for these without the kernel-log check (docs/deploy.md).
	for _, s := range []string{"SYSLOG", "/host/dev/kmsg", "path: /dev/kmsg"} {
		if strings.Contains(string(unpriv), s) {
			t.Errorf("components/unprivileged: DaemonSet has %q:\n%s", s, unpriv)
		}
	}

	// The kubeadm kubelet-config component: that one file, at its own path
	// under /host, checked as a File.
	k = fmt.Sprintf("resources: [%s]\ncomponents: [%s/components/kubeadm-kubelet-config]\n", rel, rel)
	if err := os.WriteFile(filepath.Join(ovl, "kustomization.yaml"), []byte(k), 0o644); err != nil {
		t.Fatal(err)
	}
	var kubeadm []byte
	for _, o := range renderObjects(t, ovl) {
		if o["kind"] == "DaemonSet" {
			checkScheduling(t, "components/kubeadm-kubelet-config", o)
			kubeadm, _ = yaml.Marshal(o)
		}
	}
	for _, s := range []string{"mountPath: /host/var/lib/kubelet/config.yaml", "path: /var/lib/kubelet/config.yaml", "mountPath: /host/etc/resolv.conf"} {
		if !strings.Contains(string(kubeadm), s) {
			t.Errorf("components/kubeadm-kubelet-config: DaemonSet lacks %q:\n%s", s, kubeadm)
		}
	}
	if strings.Contains(string(kubeadm), "path: /var/lib/kubelet\n") {
		t.Errorf("components/kubeadm-kubelet-config mounts all of /var/lib/kubelet:\n%s", kubeadm)
	}

	po := renderObjects(t, filepath.Join(deployDir(t), "prometheus-operator"))
	var pk []string
	for _, o := range po {
		pk = append(pk, o["kind"].(string))
	}
	if strings.Join(pk, ",") != "ServiceAccount,ClusterRoleBinding,Secret,PodMonitor,PrometheusRule" {
		t.Errorf("prometheus-operator renders %v", pk)
	}
	// The PodMonitor scrapes over HTTPS with the scraper's token, and the
	// scraper is bound to the reader role.
	for _, o := range po {
		b, _ := yaml.Marshal(o)
		var want []string
		switch o["kind"] {
		case "PodMonitor":
			want = []string{"scheme: https", "type: Bearer", "name: node-doctor-metrics-scraper", "key: token", "insecureSkipVerify: true"}
		case "Secret":
			want = []string{"type: kubernetes.io/service-account-token", "kubernetes.io/service-account.name: node-doctor-metrics-scraper"}
		case "ClusterRoleBinding":
			want = []string{"name: node-doctor-metrics-reader", "name: node-doctor-metrics-scraper", "namespace: node-doctor"}
		}
		for _, w := range want {
			if !strings.Contains(string(b), w) {
				t.Errorf("prometheus-operator %s lacks %q:\n%s", o["kind"], w, b)
			}
		}
	}
}

// checkScheduling checks what lets the DaemonSet run on every Linux node
// and only there, creating nothing on it: the nodeSelector, and host paths
// that the kubelet only checks (Directory, File, ...), never creates
// (*OrCreate) nor leaves to the runtime, which creates a missing source
// ("" type).
func checkScheduling(t *testing.T, what string, ds map[string]any) {
	t.Helper()
	spec := ds["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
	sel, _ := spec["nodeSelector"].(map[string]any)
	if sel["kubernetes.io/os"] != "linux" {
		t.Errorf("%s: DaemonSet nodeSelector = %v, want kubernetes.io/os: linux", what, spec["nodeSelector"])
	}
	checked := map[string]bool{"Directory": true, "File": true, "CharDevice": true, "BlockDevice": true, "Socket": true}
	var paths []string
	for _, v := range spec["volumes"].([]any) {
		vol := v.(map[string]any)
		hp, ok := vol["hostPath"].(map[string]any)
		if !ok {
			continue
		}
		typ, _ := hp["type"].(string)
		paths = append(paths, fmt.Sprintf("%v", hp["path"]))
		if !checked[typ] {
			t.Errorf("%s: hostPath %v (volume %v) has type %q: the node would get what is missing created", what, hp["path"], vol["name"], typ)
		}
	}
	if len(paths) == 0 {
		t.Errorf("%s: DaemonSet has no hostPath volume", what)
	}
	// node-doctor takes no xtables lock (iptables-save does not lock).
	for _, p := range paths {
		if p == "/run/xtables.lock" {
			t.Errorf("%s: DaemonSet mounts /run/xtables.lock", what)
		}
	}
}

// checkCriticalQuota checks the ResourceQuota that admits
// system-node-critical pods where the API server limits that class to
// namespaces with a quota for it (GKE).
func checkCriticalQuota(t *testing.T, rq map[string]any) {
	t.Helper()
	if rq == nil {
		return
	}
	b, _ := yaml.Marshal(rq["spec"])
	want := "hard:\n    pods: 1G\nscopeSelector:\n    matchExpressions:\n        - operator: In\n          scopeName: PriorityClass\n          values:\n            - system-node-critical\n"
	if string(b) != want {
		t.Errorf("ResourceQuota spec:\n%s\nwant:\n%s", b, want)
	}
}
