//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/node-doctor/node-doctor/internal/testmetrics"
	"github.com/node-doctor/node-doctor/pkg/kube"
	"github.com/node-doctor/node-doctor/pkg/kube/kubetest"
	"github.com/node-doctor/node-doctor/test/harness"
)

// TestDataplaneScale has real kube-proxy program E2E_SCALE Services with 5
// endpoints each (selector-less Services with their own EndpointSlices, so
// no pods are needed) and measures one node-doctor verification with the
// netlink readers (the default) and the exec readers against iptables-save /
// nft alone on the same rules, interleaved in one run, the check's own peak
// RSS without and with the DaemonSet's GOMEMLIMIT (and at the GOMEMLIMITs in
// E2E_SCALE_GOMEMLIMITS, e.g. 60MiB,80MiB), and (iptables mode) the
// informers' heap. E2E_SCALE_MODE=nftables runs one mode. E2E_SCALE_RUN=10m also runs the agent (iptables mode) with its
// defaults that long and reports its API requests per hour and RSS;
// E2E_SCALE_CONTAINERS=1000 adds that many running containers (pods of 10
// on the real containerd) and a kernel-log file flood during that run, and
// then requires the agent's peak RSS under the DaemonSet's memory limit and
// its CPU under one core. Off unless E2E_SCALE is set:
//
//	E2E_SCALE=10000 E2E_SCALE_RUN=10m E2E_SCALE_CONTAINERS=1000 E2E_RUN=TestDataplaneScale E2E_TIMEOUT=120m make e2e
func TestDataplaneScale(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("E2E_SCALE"))
	if n <= 0 {
		t.Skip("scale test: set E2E_SCALE=<services>")
	}
	harness.RequireRoot(t)
	// Built as the image builds it (static, -s -w), for the memory figures.
	agent := buildStaticAgent(t)
	for _, mode := range []string{"iptables", "nftables"} {
		if m := os.Getenv("E2E_SCALE_MODE"); m != "" && m != mode {
			continue
		}
		t.Run(mode, func(t *testing.T) { dataplaneScale(t, mode, agent, n) })
	}
}

func dataplaneScale(t *testing.T, mode, bin string, n int) {
	c := harness.StartT(t, harness.Options{ProxyMode: mode})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	rc := *c.RESTConfig
	rc.QPS, rc.Burst = 300, 600
	cs, err := kubernetes.NewForConfig(&rc)
	if err != nil {
		t.Fatal(err)
	}
	ns, err := c.CreateNamespace(ctx, "scale")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	work := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				if err := createScaleService(ctx, cs, ns, i); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	if firstErr != nil {
		t.Fatal(firstErr)
	}
	t.Logf("%s: created %d Services and EndpointSlices in %s", mode, n, time.Since(start).Round(time.Second))

	// Wait until node-doctor verifies every port (kube-proxy has caught up).
	var verified string
	err = wait.PollUntilContextTimeout(ctx, 5*time.Second, 20*time.Minute, true, func(ctx context.Context) (bool, error) {
		out, _, _ := runTimed(ctx, t, bin, "check", "-o", "json", "--kubeconfig", c.Kubeconfig, "--node-name", c.NodeName, "--only", "kube-proxy-rules")
		verified = verifiedPorts(out)
		v, _ := strconv.Atoi(verified)
		return v >= n, nil
	})
	if err != nil {
		t.Fatalf("node-doctor never verified %d ports (last: %s verified)", n, verified)
	}
	t.Logf("%s: kube-proxy programmed everything %s after the first create", mode, time.Since(start).Round(time.Second))

	// Side by side, interleaved so that the machine's load falls on all
	// alike: the check with the default (netlink) readers, the same with
	// the exec readers (dataplane.reader: exec), each bare and with the
	// DaemonSet's GOMEMLIMIT, and the rules tools alone. Best time of each;
	// peak RSS is the process's own VmHWM (the exec reader's tools are
	// children, measured alone below).
	limit := manifestGOMEMLIMIT(t)
	execCfg := filepath.Join(t.TempDir(), "exec-reader.yaml")
	if err := os.WriteFile(execCfg, []byte("dataplane:\n  reader: exec\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	checkArgs := []string{"check", "-o", "json", "--kubeconfig", c.Kubeconfig, "--node-name", c.NodeName, "--only", "kube-proxy-rules"}
	type variant struct {
		name string
		env  []string
		args []string
	}
	variants := []variant{
		{"netlink", nil, checkArgs},
		{"netlink GOMEMLIMIT=" + limit, []string{"GOMEMLIMIT=" + limit}, checkArgs},
		{"exec", nil, append(slices.Clone(checkArgs), "--config", execCfg)},
		{"exec GOMEMLIMIT=" + limit, []string{"GOMEMLIMIT=" + limit}, append(slices.Clone(checkArgs), "--config", execCfg)},
	}
	bestOf := map[string]time.Duration{}
	hwmOf := map[string]int64{}
	var alone, toolRSS int64
	for round := 0; round < 4; round++ {
		for _, v := range variants {
			out, d, hwm := runMeasured(ctx, t, v.env, bin, v.args...)
			if got, _ := strconv.Atoi(verifiedPorts(out)); got < n {
				t.Errorf("%s: node-doctor check (%s) verified %d ports, want %d: %s", mode, v.name, got, n, out)
			}
			if b, ok := bestOf[v.name]; !ok || d < b {
				bestOf[v.name] = d
			}
			hwmOf[v.name] = max(hwmOf[v.name], hwm)
		}
		var d time.Duration
		var r int64
		if mode == "iptables" {
			_, d1, r1 := runTimed(ctx, t, "iptables-nft-save", "-t", "nat")
			_, d2, r2 := runTimed(ctx, t, "iptables-nft-save", "-t", "filter")
			d, r = d1+d2, max(r1, r2)
		} else {
			_, d, r = runTimed(ctx, t, "nft", "-j", "list", "table", "ip", "kube-proxy")
		}
		if round == 0 || int64(d) < alone {
			alone = int64(d)
		}
		toolRSS = max(toolRSS, r)
	}
	tool := "nft -j list table ip kube-proxy"
	if mode == "iptables" {
		tool = "iptables-nft-save -t nat + -t filter"
	}
	t.Logf("%s: %d services x 5 endpoints: %s alone: best %s, peak RSS %d MiB", mode, n, tool, time.Duration(alone), toolRSS/1024)
	for _, v := range variants {
		t.Logf("%s: node-doctor check (%s; whole process: API list + read + parse + compare): best of 4 %s = %.2fx the tool alone; its own peak RSS (VmHWM) %d MiB",
			mode, v.name, bestOf[v.name], float64(bestOf[v.name])/float64(alone), hwmOf[v.name]/1024)
	}

	// Peak RSS of the netlink check at other GOMEMLIMITs (E2E_SCALE_GOMEMLIMITS,
	// comma-separated), and what the Go heap held (GODEBUG=gctrace=1).
	for _, gml := range append([]string{limit}, strings.FieldsFunc(os.Getenv("E2E_SCALE_GOMEMLIMITS"), func(r rune) bool { return r == ',' })...) {
		_, d, hwm, gc := runGCTrace(ctx, t, []string{"GOMEMLIMIT=" + gml}, bin, checkArgs...)
		t.Logf("%s: node-doctor check (netlink) GOMEMLIMIT=%s: %s (%.2fx), VmHWM %d MiB; %s", mode, gml, d, float64(d)/float64(alone), hwm/1024, gc)
	}

	if mode == "iptables" {
		legacySaveAlone(ctx, t)
		informerHeap(ctx, t, c)
	}
	if d, _ := time.ParseDuration(os.Getenv("E2E_SCALE_RUN")); d > 0 && mode == "iptables" {
		scaleSteadyState(ctx, t, c, bin, mode, limit, d)
	}
}

// legacySaveAlone loads kube-proxy's nat table as it is now (read with
// iptables-nft-save) into iptables-legacy in a network namespace of its
// own and measures iptables-legacy-save on it: the one tool the agent still
// runs, in its own cgroup, on a node whose kube-proxy uses the legacy
// backend.
func legacySaveAlone(ctx context.Context, t *testing.T) {
	t.Helper()
	rules, _, _ := runTimed(ctx, t, "iptables-nft-save", "-t", "nat")
	ns := fmt.Sprintf("nd-scale-legacy-%d", os.Getpid())
	if out, err := exec.CommandContext(ctx, "ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", ns, err, out)
	}
	defer func() { _ = exec.Command("ip", "netns", "del", ns).Run() }()
	load := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "iptables-legacy-restore")
	load.Stdin = bytes.NewReader(rules)
	if out, err := load.CombinedOutput(); err != nil {
		t.Fatalf("iptables-legacy-restore of kube-proxy's nat table (%d bytes): %v: %s", len(rules), err, out)
	}
	var best time.Duration
	var rss int64
	var lines int
	for i := 0; i < 3; i++ {
		out, d, r := runTimed(ctx, t, "ip", "netns", "exec", ns, "iptables-legacy-save", "-t", "nat")
		if i == 0 || d < best {
			best = d
		}
		rss, lines = max(rss, r), bytes.Count(out, []byte("\n"))
	}
	t.Logf("iptables-legacy-save -t nat alone on the same nat table (%d lines) in iptables-legacy: best of 3 %s, peak RSS %d MiB", lines, best, rss/1024)
}

// manifestContainers are the DaemonSet's containers as deploy/ sets them.
func manifestContainers(t *testing.T) []corev1.Container {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "daemonset.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var ds appsv1.DaemonSet
	if err := yaml.Unmarshal(b, &ds); err != nil {
		t.Fatalf("deploy/daemonset.yaml: %v", err)
	}
	return ds.Spec.Template.Spec.Containers
}

// manifestGOMEMLIMIT is the GOMEMLIMIT the DaemonSet sets.
func manifestGOMEMLIMIT(t *testing.T) string {
	t.Helper()
	for _, c := range manifestContainers(t) {
		for _, e := range c.Env {
			if e.Name == "GOMEMLIMIT" && e.Value != "" {
				return e.Value
			}
		}
	}
	t.Fatal("deploy/daemonset.yaml sets no literal GOMEMLIMIT")
	return ""
}

// manifestMemoryLimit is the memory limit the DaemonSet sets, in bytes.
func manifestMemoryLimit(t *testing.T) int64 {
	t.Helper()
	for _, c := range manifestContainers(t) {
		if q, ok := c.Resources.Limits[corev1.ResourceMemory]; ok {
			return q.Value()
		}
	}
	t.Fatal("deploy/daemonset.yaml sets no memory limit")
	return 0
}

// informerHeap measures, in this process, the heap the agent's informers
// hold once synced: Services, EndpointSlices and the node, as trimmed.
func informerHeap(ctx context.Context, t *testing.T, c *harness.Cluster) {
	t.Helper()
	rc, err := kube.RESTConfig(kube.ClientOptions{Kubeconfig: c.Kubeconfig, QPS: 20, Burst: 40, UserAgent: "node-doctor-e2e"})
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	before := heapAfterGC()
	inf := kube.NewInformers()
	inf.Connect(kubetest.Adapt(cs), c.NodeName, 0)
	ictx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	if err := inf.Start(ictx, 5*time.Minute); err != nil {
		t.Fatal(err)
	}
	synced := time.Since(start)
	after := heapAfterGC()
	svcs, _ := inf.Services()
	eps, _ := inf.EndpointSlices()
	t.Logf("informers: %d Services, %d EndpointSlices synced in %s; heap after sync minus before: %.1f MiB",
		len(svcs), len(eps), synced.Round(time.Millisecond), float64(after-before)/(1<<20))
}

func heapAfterGC() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// scaleSteadyState runs `node-doctor run` with its defaults (every check,
// condition heartbeat 5m) and the DaemonSet's GOMEMLIMIT for d, and reports
// its API requests (after the first minute, extrapolated to an hour), its
// RSS and the verification time.
func scaleSteadyState(ctx context.Context, t *testing.T, c *harness.Cluster, bin, mode, limit string, d time.Duration) {
	t.Helper()
	const addr = "127.0.0.1:19781"
	containers, _ := strconv.Atoi(os.Getenv("E2E_SCALE_CONTAINERS"))
	args := []string{"run", "--kubeconfig", c.Kubeconfig, "--node-name", c.NodeName,
		"--runtime-endpoint", c.CRIEndpoint, "--metrics-address", addr}
	var flood *logFlood
	if containers > 0 {
		scaleContainers(ctx, t, c, containers)
		flood = newLogFlood(t)
		args = append(args, "--config", flood.config)
	}
	// gctrace says what the heap held at the peak; the log goes with it.
	stderr, err := os.Create(filepath.Join(t.TempDir(), "agent.stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "GOMEMLIMIT="+limit, "GODEBUG=gctrace=1")
	cmd.Stdout, cmd.Stderr = io.Discard, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	start := time.Now()
	var first, last map[string]float64
	var t0 time.Time
	var maxRSS float64
	for time.Since(start) < d {
		if flood != nil && time.Since(start) > 30*time.Second {
			flood.write(t, 20_000)
		}
		time.Sleep(15 * time.Second)
		m, err := testmetrics.Scrape(ctx, nil, "http://"+addr+"/metrics")
		if err != nil {
			t.Logf("scrape: %v", err)
			continue
		}
		maxRSS = max(maxRSS, m["process_resident_memory_bytes"])
		if first == nil && time.Since(start) >= time.Minute {
			first, t0 = m, time.Now()
		}
		last = m
	}
	if first == nil || last == nil {
		t.Fatalf("%s: agent metrics never scraped", mode)
	}
	window := time.Since(t0)
	total := 0.0
	var lines []string
	for k, v := range last {
		if !strings.HasPrefix(k, "node_doctor_kube_api_requests_total") {
			continue
		}
		delta := v - first[k]
		total += delta
		lines = append(lines, fmt.Sprintf("%s: %.0f since start, %.0f in the window", k, v, delta))
	}
	sort.Strings(lines)
	for _, l := range lines {
		t.Logf("%s: %s", mode, l)
	}
	hwm := vmHWM(cmd.Process.Pid)
	cpu := (last["process_cpu_seconds_total"] - first["process_cpu_seconds_total"]) / window.Seconds()
	trace, _ := os.ReadFile(stderr.Name())
	t.Logf("%s: agent run for %s (GOMEMLIMIT=%s): API requests after the first minute: %.0f in %s = %.0f per hour; RSS max %.0f MiB (scraped every 15 s), VmHWM %d MiB; CPU %.3f cores after the first minute; last verification %.2f s; %s",
		mode, d, limit, total, window.Round(time.Second), total/window.Hours(), maxRSS/(1<<20), hwm/1024, cpu,
		last["node_doctor_kubeproxy_verification_duration_seconds"], gcSummary(trace))
	if flood == nil {
		return
	}
	sum := func(prefix string) float64 {
		v := 0.0
		for k, x := range last {
			if strings.HasPrefix(k, prefix) {
				v += x
			}
		}
		return v
	}
	t.Logf("%s: combined load: %d containers running, %d log lines flooded; findings dropped %.0f, checks skipped %.0f, CRI containers seen %.0f",
		mode, containers, flood.lines, sum("node_doctor_kernel_log_findings_dropped_total"), sum("node_doctor_check_skipped_total"),
		sum("node_doctor_cri_containers{"))
	if lim := manifestMemoryLimit(t); hwm*1024 >= lim {
		t.Errorf("agent peak RSS %d MiB under the combined load is not under the DaemonSet's memory limit %d MiB", hwm/1024, lim>>20)
	}
	if cpu >= 1 {
		t.Errorf("agent CPU %.2f cores under the combined load: not bounded under one core", cpu)
	}
	if sum("node_doctor_kernel_log_lines_read_total") < float64(flood.lines) {
		t.Errorf("the agent read %.0f kernel-log lines of the %d flooded", sum("node_doctor_kernel_log_lines_read_total"), flood.lines)
	}
}

// scaleContainers runs n containers on the node's containerd through the
// kubelet: pods of 10 sleeping busybox containers.
func scaleContainers(ctx context.Context, t *testing.T, c *harness.Cluster, n int) {
	t.Helper()
	ns, err := c.CreateNamespace(ctx, "load")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	pods := (n + 9) / 10
	for i := 0; i < pods; i++ {
		p := c.PodSpec(harness.PodOptions{Namespace: ns, Name: fmt.Sprintf("load-%03d", i), Command: []string{"sleep", "86400"}})
		base := p.Spec.Containers[0]
		p.Spec.Containers = nil
		for j := 0; j < 10 && i*10+j < n; j++ {
			ctr := base
			ctr.Name = fmt.Sprintf("c%d", j)
			p.Spec.Containers = append(p.Spec.Containers, ctr)
		}
		if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	running := 0
	err = wait.PollUntilContextTimeout(ctx, 10*time.Second, 20*time.Minute, true, func(ctx context.Context) (bool, error) {
		l, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		running = 0
		for _, p := range l.Items {
			for _, s := range p.Status.ContainerStatuses {
				if s.State.Running != nil {
					running++
				}
			}
		}
		return running >= n, nil
	})
	if err != nil {
		t.Fatalf("only %d of %d containers running after 20 minutes", running, n)
	}
	t.Logf("%d containers in %d pods running after %s", n, pods, time.Since(start).Round(time.Second))
}

// logFlood is a kernel log file the agent follows (an NPD filelog rule
// file), appended to in bursts.
type logFlood struct {
	path, config string
	lines        int
}

func newLogFlood(t *testing.T) *logFlood {
	t.Helper()
	dir := t.TempDir()
	f := &logFlood{path: filepath.Join(dir, "kern.log"), config: filepath.Join(dir, "config.yaml")}
	rules := filepath.Join(dir, "flood.json")
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(f.path, nil, 0o644))
	must(os.WriteFile(rules, []byte(fmt.Sprintf(`{"plugin": "filelog", "pluginConfig": {"timestamp": "^.{15}", "message": "kernel: (.*)", "timestampFormat": "Jan _2 15:04:05"},
 "logPath": %q, "lookback": "5m", "bufferSize": 10, "source": "scale-flood",
 "conditions": [],
 "rules": [{"type": "temporary", "reason": "ConntrackTableFull", "pattern": "nf_conntrack: table full, dropping packet"}]}`, f.path)), 0o644))
	must(os.WriteFile(f.config, []byte(fmt.Sprintf("checks:\n  kernel-log: {ruleFiles: [%q]}\n", rules)), 0o644))
	return f
}

// write appends n matching lines.
func (f *logFlood) write(t *testing.T, n int) {
	t.Helper()
	fh, err := os.OpenFile(f.path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	var b bytes.Buffer
	ts := time.Now().Format("Jan _2 15:04:05")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "%s node kernel: nf_conntrack: table full, dropping packet\n", ts)
	}
	if _, err := fh.Write(b.Bytes()); err != nil {
		t.Fatal(err)
	}
	f.lines += n
}

// vmHWM is a process's peak RSS in KiB from /proc.
func vmHWM(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

func createScaleService(ctx context.Context, cs kubernetes.Interface, ns string, i int) error {
	name := fmt.Sprintf("s%05d", i)
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}}}
	if _, err := cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create service %s: %w", name, err)
	}
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: name, discoveryv1.LabelManagedBy: "node-doctor-e2e"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(int32(8080)), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	for j := 0; j < 5; j++ {
		v := 10<<24 | 128<<16 | (i*5 + j)
		sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("%d.%d.%d.%d", v>>24&255, v>>16&255, v>>8&255, v&255)},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}})
	}
	if _, err := cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, sl, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create endpointslice %s: %w", name, err)
	}
	return nil
}

// verifiedPorts is the verified count of kube-proxy-rules' RulesMatchAPI
// finding in a check -o json report ("" without one).
func verifiedPorts(out []byte) string {
	var rep dpReport
	if err := json.Unmarshal(out, &rep); err != nil {
		return ""
	}
	for _, r := range rep.Results {
		for _, f := range r.Findings {
			if f.Reason == "RulesMatchAPI" {
				return f.Details["verified"]
			}
		}
	}
	return ""
}

// runMeasured runs a command and returns its stdout, wall time and its own
// peak RSS (KiB), polled from /proc (wait4 reports the largest of it and
// its children).
func runMeasured(ctx context.Context, t *testing.T, env []string, name string, args ...string) ([]byte, time.Duration, int64) {
	t.Helper()
	out, d, hwm, _ := runMeasuredStderr(ctx, t, env, io.Discard, name, args...)
	return out, d, hwm
}

func runMeasuredStderr(ctx context.Context, t *testing.T, env []string, stderr io.Writer, name string, args ...string) ([]byte, time.Duration, int64, error) {
	t.Helper()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, stderr
	s := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var hwm int64
	for {
		select {
		case err := <-done:
			return out.Bytes(), time.Since(s), hwm, err
		case <-time.After(10 * time.Millisecond):
			// VmHWM only grows: the last read before exit is the peak.
			hwm = max(hwm, vmHWM(cmd.Process.Pid))
		}
	}
}

// runGCTrace is runMeasured with GODEBUG=gctrace=1, and a summary of the
// trace: collections, the largest heap at a collection's start, the largest
// live heap after one, and the largest goal.
func runGCTrace(ctx context.Context, t *testing.T, env []string, name string, args ...string) ([]byte, time.Duration, int64, string) {
	t.Helper()
	var stderr bytes.Buffer
	out, d, hwm, _ := runMeasuredStderr(ctx, t, append(slices.Clone(env), "GODEBUG=gctrace=1"), &stderr, name, args...)
	return out, d, hwm, gcSummary(stderr.Bytes())
}

// gcSummary reads gctrace lines ("gc 12 @1.2s 3%: ... 40->45->20 MB, 41 MB
// goal, ...").
func gcSummary(trace []byte) string {
	var n int
	var start, live, goal float64
	for _, l := range strings.Split(string(trace), "\n") {
		if !strings.HasPrefix(l, "gc ") {
			continue
		}
		f := strings.Fields(l)
		for i, w := range f {
			if w == "MB," && i > 0 && strings.Count(f[i-1], "->") == 2 && i+2 < len(f) && f[i+2] == "MB" {
				h := strings.Split(f[i-1], "->")
				a, _ := strconv.ParseFloat(h[0], 64)
				c, _ := strconv.ParseFloat(h[2], 64)
				g, _ := strconv.ParseFloat(f[i+1], 64)
				n++
				start, live, goal = max(start, a), max(live, c), max(goal, g)
				break
			}
		}
	}
	return fmt.Sprintf("gctrace: %d collections, heap at a collection's start up to %.0f MB, live after one up to %.0f MB, goal up to %.0f MB", n, start, live, goal)
}

// runTimed runs a command and returns its stdout, wall time and peak RSS (KiB).
func runTimed(ctx context.Context, t *testing.T, name string, args ...string) ([]byte, time.Duration, int64) {
	t.Helper()
	return runTimedEnv(ctx, t, nil, name, args...)
}

// runTimedEnv is runTimed with variables added to the environment.
func runTimedEnv(ctx context.Context, t *testing.T, env []string, name string, args ...string) ([]byte, time.Duration, int64) {
	t.Helper()
	cmd := exec.CommandContext(ctx, name, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, io.Discard
	s := time.Now()
	_ = cmd.Run()
	d := time.Since(s)
	var rss int64
	if cmd.ProcessState == nil {
		return out.Bytes(), d, 0
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		rss = ru.Maxrss
	}
	return out.Bytes(), d, rss
}
