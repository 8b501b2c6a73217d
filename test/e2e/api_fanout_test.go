//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/time/rate"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/node-doctor/node-doctor/test/harness"
)

// fanoutWatchFactor bounds the agent's watch bytes during EndpointSlice
// churn against kube-proxy's on the same node: both receive each changed
// slice once, encoded the same (protobuf), and the agent's extra watches
// (its own pods, its Lease) add a few small events a minute. A JSON watch,
// a second informer per type or a relist loop each at least double it.
const fanoutWatchFactor = 1.5

// TestAPIFanout measures what one agent costs the API server next to
// kube-proxy on the same node: both talk to it through a counting proxy
// (harness.APIProxy) while the test changes EndpointSlices through the
// API. It requires that the agent makes no LIST once its informers synced,
// receives protobuf only, and that its watch bytes stay within
// fanoutWatchFactor of kube-proxy's. In CI the churn lasts 10 s.
// E2E_FANOUT=1 makes it the measurement of docs/performance.md: first
// E2E_FANOUT_IDLE (5m) of an idle `run` with the DaemonSet's config and
// GOMEMLIMIT (RSS and CPU from /proc), then E2E_FANOUT_CHURN (3m) of
// E2E_FANOUT_RATE (100) EndpointSlice changes a second; with
// E2E_FANOUT_CPUPROFILE=file, a CPU profile of the idle agent (--profiling):
//
//	E2E_FANOUT=1 E2E_RUN=TestAPIFanout make e2e
func TestAPIFanout(t *testing.T) {
	harness.RequireRoot(t)
	long := os.Getenv("E2E_FANOUT") != ""
	idle, churn, perSec := time.Duration(0), 10*time.Second, 100.0
	if long {
		idle, churn = envDuration(t, "E2E_FANOUT_IDLE", 5*time.Minute), envDuration(t, "E2E_FANOUT_CHURN", 3*time.Minute)
		if v := os.Getenv("E2E_FANOUT_RATE"); v != "" {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || f <= 0 {
				t.Fatalf("E2E_FANOUT_RATE=%q: want changes per second", v)
			}
			perSec = f
		}
	}
	bin := buildStaticAgent(t)
	c := harness.StartT(t, harness.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()

	kpProxy, err := c.StartAPIProxy()
	if err != nil {
		t.Fatal(err)
	}
	defer kpProxy.Close()
	agentProxy, err := c.StartAPIProxy()
	if err != nil {
		t.Fatal(err)
	}
	defer agentProxy.Close()
	if err := c.RouteKubeProxy(ctx, kpProxy.URL); err != nil {
		t.Fatal(err)
	}
	kubeconfig, err := c.KubeconfigVia("admin", agentProxy.URL)
	if err != nil {
		t.Fatal(err)
	}

	// Services with EndpointSlices to change, made before the agent
	// starts so its first list holds them.
	rc := *c.RESTConfig
	rc.QPS, rc.Burst = 1000, 1000
	cs, err := kubernetes.NewForConfig(&rc)
	if err != nil {
		t.Fatal(err)
	}
	ns, err := c.CreateNamespace(ctx, "fanout")
	if err != nil {
		t.Fatal(err)
	}
	const services = 50
	for i := 0; i < services; i++ {
		if err := createScaleService(ctx, cs, ns, i); err != nil {
			t.Fatal(err)
		}
	}

	agent, metricsURL := startFanoutAgent(t, c, bin, kubeconfig, long)
	waitFor(t, "the agent's informers to sync and its first report", 2*time.Minute, func() (bool, string) {
		st := agentProxy.Stats()
		var missing []string
		for _, r := range []string{"services", "endpointslices", "nodes", "pods", "leases"} {
			if !hasVerb(st, "watch", r) {
				missing = append(missing, "watch "+r)
			}
		}
		if n, _ := st.Verb("patch"); n == 0 {
			missing = append(missing, "patch nodes/status")
		}
		return len(missing) == 0, strings.Join(missing, ", ")
	})
	time.Sleep(3 * time.Second) // the initial events drain
	startAgent, startKP := agentProxy.Stats(), kpProxy.Stats()
	t.Logf("agent at start (until synced and first report):\n%s", formatStats(startAgent, 0))
	t.Logf("kube-proxy at start (restart until now):\n%s", formatStats(startKP, 0))

	if idle > 0 {
		t0 := time.Now()
		profiled := make(chan struct{})
		if path := os.Getenv("E2E_FANOUT_CPUPROFILE"); path != "" {
			go func() {
				defer close(profiled)
				u := strings.TrimSuffix(metricsURL, "/metrics") + fmt.Sprintf("/debug/pprof/profile?seconds=%d", max(1, int(idle.Seconds())-10))
				resp, err := http.Get(u)
				if err != nil {
					t.Errorf("cpu profile: %v", err)
					return
				}
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body)
				if err != nil || resp.StatusCode != 200 {
					t.Errorf("cpu profile: %d %v", resp.StatusCode, err)
					return
				}
				if err := os.WriteFile(path, b, 0o600); err != nil {
					t.Errorf("cpu profile: %v", err)
				}
			}()
		} else {
			close(profiled)
		}
		defer func() { <-profiled }()
		r0, cpu0 := procRSS(agent.Process.Pid), procCPU(agent.Process.Pid)
		var maxRSS procMem
		for time.Since(t0) < idle {
			time.Sleep(10 * time.Second)
			if m := procRSS(agent.Process.Pid); m.RSS > maxRSS.RSS {
				maxRSS = m
			}
		}
		d := time.Since(t0)
		r1, cpu1 := procRSS(agent.Process.Pid), procCPU(agent.Process.Pid)
		t.Logf("idle agent over %s: VmRSS %.1f MiB at start, %.1f MiB at end (anon %.1f, file %.1f), max %.1f MiB, VmHWM %.1f MiB; CPU %.2f s = %.2f mCPU average",
			d.Round(time.Second), mib(r0.RSS), mib(r1.RSS), mib(r1.Anon), mib(r1.File), mib(maxRSS.RSS), mib(r1.HWM),
			(cpu1 - cpu0).Seconds(), 1000*(cpu1-cpu0).Seconds()/d.Seconds())
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", agent.Process.Pid)); err == nil {
			t.Logf("idle agent smaps_rollup:\n%s", b)
		}
		if f, ok := agent.Stdout.(*os.File); ok {
			var gc []string
			for _, l := range strings.Split(harness.Tail(f.Name(), 400), "\n") {
				if strings.HasPrefix(l, "gc ") {
					gc = append(gc, l)
				}
			}
			t.Logf("idle agent: %d GCs in the last 400 log lines, the last: %s", len(gc), strings.Join(gc[max(0, len(gc)-3):], "\n"))
		}
		t.Logf("idle agent's Go memory (/metrics):\n%s", goMemory(t, metricsURL))
		a, k := agentProxy.Stats().Sub(startAgent), kpProxy.Stats().Sub(startKP)
		t.Logf("agent idle %s:\n%s", d.Round(time.Second), formatStats(a, d))
		t.Logf("kube-proxy idle %s:\n%s", d.Round(time.Second), formatStats(k, d))
	}

	beforeAgent, beforeKP := agentProxy.Stats(), kpProxy.Stats()
	t0 := time.Now()
	changes := churnEndpointSlices(ctx, t, cs, ns, services, perSec, churn)
	d := time.Since(t0)
	time.Sleep(3 * time.Second) // the last events reach both
	a, k := agentProxy.Stats().Sub(beforeAgent), kpProxy.Stats().Sub(beforeKP)
	t.Logf("churn: %d EndpointSlice changes in %s (%.0f/s)", changes, d.Round(time.Second), float64(changes)/d.Seconds())
	t.Logf("agent during churn:\n%s", formatStats(a, d))
	t.Logf("kube-proxy during churn:\n%s", formatStats(k, d))
	_, aw := a.Verb("watch")
	_, kw := k.Verb("watch")
	t.Logf("agent/kube-proxy: watch body bytes %.2f, wire bytes to client %.2f", float64(aw)/float64(kw), float64(a.WireToClient)/float64(k.WireToClient))

	// The counting saw the churn: every change is at least 100 bytes of watch.
	if kw < int64(changes)*100 {
		t.Fatalf("kube-proxy received %d watch bytes for %d EndpointSlice changes: the proxy did not see its watch", kw, changes)
	}
	if aw < int64(changes)*100 {
		t.Errorf("the agent received %d watch bytes for %d EndpointSlice changes: its EndpointSlice watch is not live", aw, changes)
	}
	if float64(aw) > fanoutWatchFactor*float64(kw) {
		t.Errorf("agent watch bytes during churn = %d, kube-proxy's %d: more than %.1f×", aw, kw, fanoutWatchFactor)
	}
	if v := os.Getenv("E2E_FANOUT_WATCHERS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("E2E_FANOUT_WATCHERS=%q: want a number of watches", v)
		}
		apiserverWatchCost(ctx, t, c, cs, ns, services, perSec, n)
	}
	all := agentProxy.Stats().Sub(startAgent)
	if n, _ := all.Verb("list"); n != 0 {
		t.Errorf("the agent made %d LISTs after its informers synced, want 0:\n%s", n, formatStats(all, 0))
	}
	for kind, s := range agentProxy.Stats().Requests {
		for ct := range s.ContentTypes {
			if ct != "" && !strings.HasPrefix(ct, "application/vnd.kubernetes.protobuf") {
				t.Errorf("agent %s answered as %q, want protobuf", kind, ct)
			}
		}
	}
}

// apiserverWatchCost measures what n more EndpointSlice watchers (each
// what one more node's agent adds) cost the API server: its RSS once they
// are open, and its CPU during 30 s of churn without and with them. The
// watches are read as raw protobuf streams and discarded.
func apiserverWatchCost(ctx context.Context, t *testing.T, c *harness.Cluster, cs kubernetes.Interface, ns string, services int, perSec float64, n int) {
	t.Helper()
	st, err := harness.LoadState(c.WorkDir)
	if err != nil {
		t.Fatal(err)
	}
	pid := 0
	for _, p := range st.Procs {
		if p.Name == "kube-apiserver" {
			pid = p.Pid
		}
	}
	if pid == 0 {
		t.Fatal("no kube-apiserver in the harness state")
	}
	const window = 30 * time.Second
	cpuPerSec := func() (float64, int) {
		c0, t0 := procCPU(pid), time.Now()
		changes := churnEndpointSlices(ctx, t, cs, ns, services, perSec, window)
		return (procCPU(pid) - c0).Seconds() / time.Since(t0).Seconds(), changes
	}
	base, baseChanges := cpuPerSec()
	rss0 := procRSS(pid)
	rc := *c.RESTConfig
	rc.ContentType = "application/vnd.kubernetes.protobuf"
	rc.AcceptContentTypes = rc.ContentType
	rc.QPS, rc.Burst = 1000, 1000
	rcs, err := kubernetes.NewForConfig(&rc)
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	var open, got atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body, err := rcs.DiscoveryV1().RESTClient().Get().Resource("endpointslices").
				Param("watch", "true").Param("allowWatchBookmarks", "true").Param("timeoutSeconds", "3600").Stream(wctx)
			if err != nil {
				return
			}
			defer body.Close()
			open.Add(1)
			n, _ := io.Copy(io.Discard, body)
			got.Add(n)
		}()
	}
	waitFor(t, fmt.Sprintf("%d watches open", n), time.Minute, func() (bool, string) {
		return open.Load() == int64(n), fmt.Sprintf("%d open", open.Load())
	})
	time.Sleep(5 * time.Second)
	rss1 := procRSS(pid)
	with, withChanges := cpuPerSec()
	rss2 := procRSS(pid)
	stop()
	wg.Wait()
	t.Logf("kube-apiserver with %d more EndpointSlice watches: VmRSS %.0f → %.0f MiB once open (%.1f KiB a watch), %.0f MiB after churn; CPU during churn %.3f cores without (%d changes in %s), %.3f with (%d changes, %d bytes to the watches = %.0f per change and watch)",
		n, mib(rss0.RSS), mib(rss1.RSS), float64(rss1.RSS-rss0.RSS)/1024/float64(n), mib(rss2.RSS), base, baseChanges, window, with, withChanges,
		got.Load(), float64(got.Load())/float64(withChanges)/float64(n))
}

// startFanoutAgent runs `node-doctor run` as the DaemonSet does: its
// config (with the host's root instead of /host, metrics on loopback) and
// GOMEMLIMIT; the log goes to a file kept in the test's temp dir.
func startFanoutAgent(t *testing.T, c *harness.Cluster, bin, kubeconfig string, gctrace bool) (*exec.Cmd, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	raw, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(string(raw), "\n") {
		switch {
		case strings.HasPrefix(l, "hostRoot:"):
			l = "hostRoot: /"
		case strings.HasPrefix(l, "metricsAddress:"):
			l = "metricsAddress: " + addr
		}
		lines = append(lines, l)
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "agent.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "--config", cfg, "--kubeconfig", kubeconfig, "--node-name", c.NodeName,
		"--runtime-endpoint", c.CRIEndpoint)
	if os.Getenv("E2E_FANOUT_CPUPROFILE") != "" {
		cmd.Args = append(cmd.Args, "--profiling")
	}
	cmd.Env = append(os.Environ(), "GOMEMLIMIT="+manifestGOMEMLIMIT(t))
	if gctrace {
		cmd.Env = append(cmd.Env, "GODEBUG=gctrace=1")
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logf.Close()
		if t.Failed() {
			t.Logf("agent log tail:\n%s", harness.Tail(logf.Name(), 40))
		}
	})
	return cmd, "http://" + addr + "/metrics"
}

// churnEndpointSlices flips one endpoint's readiness in one of the
// namespace's slices, perSec times a second for d, and returns how many
// changes the API server accepted.
func churnEndpointSlices(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns string, services int, perSec float64, d time.Duration) int {
	t.Helper()
	// stop ends the churn; the requests get ctx, so that client-go's own
	// rate limiter never refuses one for the deadline being near.
	stop, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	lim := rate.NewLimiter(rate.Limit(perSec), 1)
	var done atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	const workers = 8
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []*discoveryv1.EndpointSlice
			for i := w; i < services; i += workers {
				sl, err := cs.DiscoveryV1().EndpointSlices(ns).Get(ctx, fmt.Sprintf("s%05d-1", i), metav1.GetOptions{})
				if err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
				mine = append(mine, sl)
			}
			for n := 0; ; n++ {
				if lim.Wait(stop) != nil {
					return
				}
				sl := mine[n%len(mine)]
				e := &sl.Endpoints[(n/len(mine))%len(sl.Endpoints)]
				e.Conditions.Ready = ptr.To(!ptr.Deref(e.Conditions.Ready, true))
				out, err := cs.DiscoveryV1().EndpointSlices(ns).Update(ctx, sl, metav1.UpdateOptions{})
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
				mine[n%len(mine)] = out
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatalf("change EndpointSlices: %v", firstErr)
	}
	return int(done.Load())
}

// goMemory is the Go runtime's memory lines of an agent's /metrics.
func goMemory(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url) //nolint:gosec // the test's own loopback agent
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "go_memstats_") || strings.HasPrefix(l, "go_goroutines") || strings.HasPrefix(l, "go_gc_gogc") || strings.HasPrefix(l, "go_gc_gomemlimit") {
			out = append(out, "  "+l)
		}
	}
	return strings.Join(out, "\n")
}

func hasVerb(s harness.APIStats, verb, resource string) bool {
	for k, v := range s.Requests {
		if k.Verb == verb && k.Resource == resource && v.Count > 0 {
			return true
		}
	}
	return false
}

// formatStats lists requests by kind; over d they are also given per hour
// and the bytes per minute.
func formatStats(s harness.APIStats, d time.Duration) string {
	var keys []harness.APIRequest
	for k := range s.Requests {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
	var b strings.Builder
	perMin := func(n int64) string {
		if d <= 0 {
			return ""
		}
		return fmt.Sprintf(" (%.0f B/min)", float64(n)/d.Minutes())
	}
	for _, k := range keys {
		v := s.Requests[k]
		var cts []string
		for ct := range v.ContentTypes {
			cts = append(cts, ct)
		}
		sort.Strings(cts)
		ph := ""
		if d > 0 {
			ph = fmt.Sprintf(" = %.0f/h", float64(v.Count)/d.Hours())
		}
		fmt.Fprintf(&b, "  %-40s %5d%s  body %d B%s  %s\n", k.String(), v.Count, ph, v.BodyBytes, perMin(v.BodyBytes), strings.Join(cts, ","))
	}
	fmt.Fprintf(&b, "  wire: %d B to client%s, %d B from client%s", s.WireToClient, perMin(s.WireToClient), s.WireFromClient, perMin(s.WireFromClient))
	return b.String()
}

type procMem struct{ RSS, HWM, Anon, File int64 } // bytes

func procRSS(pid int) procMem {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	var m procMem
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		switch k {
		case "VmRSS":
			m.RSS = n << 10
		case "VmHWM":
			m.HWM = n << 10
		case "RssAnon":
			m.Anon = n << 10
		case "RssFile":
			m.File = n << 10
		}
	}
	return m
}

// procCPU is a process's user+system CPU time (clock ticks of 10 ms).
func procCPU(pid int) time.Duration {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+st) * 10 * time.Millisecond
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, v, err)
	}
	return d
}
