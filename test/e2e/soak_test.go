//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/node-doctor/node-doctor/pkg/kubeproxy"
	"github.com/node-doctor/node-doctor/test/harness"
)

// TestSoak runs the agent with every check at its defaults and reporting on
// while the harness node does what a healthy cluster does every minute: a
// Deployment rolls, another scales up and down, pods are deleted with and
// without grace, Jobs complete, Services come, change and go, kube-proxy and
// the kubelet restart. Not one warning or problem, Event or True condition
// may come of it, while every check keeps running; then one real break
// (a service's rules flushed) must still be found.
//
// E2E_SOAK_DURATION (default 2m30s) is the churn per kube-proxy mode;
// E2E_SOAK_MODES (default "iptables nftables") the modes.
func TestSoak(t *testing.T) {
	harness.RequireRoot(t)
	d := 150 * time.Second
	if v := os.Getenv("E2E_SOAK_DURATION"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			t.Fatalf("E2E_SOAK_DURATION: %v", err)
		}
	}
	modes := strings.Fields(os.Getenv("E2E_SOAK_MODES"))
	if len(modes) == 0 {
		modes = []string{"iptables", "nftables"}
	}
	bin := buildAgent(t)
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) { soak(t, bin, mode, d) })
	}
}

type soakStats struct {
	mu                                       sync.Mutex
	revisions, scales, jobs                  int
	deletedGrace, deletedNow                 int
	svcCreated, svcChanged, svcDeleted       int
	podsSeen                                 map[string]bool
	kubeProxyRestarts, kubeletRestarts, errs int
}

func (s *soakStats) add(f func(s *soakStats)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

func soak(t *testing.T, bin, mode string, d time.Duration) {
	c := harness.StartT(t, harness.Options{ProxyMode: mode})
	ctx, cancel := context.WithTimeout(context.Background(), d+15*time.Minute)
	defer cancel()
	ns, err := c.CreateNamespace(ctx, "soak")
	if err != nil {
		t.Fatal(err)
	}
	web, err := c.CreateServiceWithEndpoints(ctx, ns, "web", 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"roll", "scale"} {
		if _, err := c.CreateDeployment(ctx, harness.PodOptions{Namespace: ns, Name: name, Port: 8080,
			Command: []string{"/bin/sh", "-c", "exec httpd -f -p 8080 -h /tmp"}}, 3); err != nil {
			t.Fatal(err)
		}
	}
	a := startMetricsAgent(t, bin, nil, 0, 0, nil, "--kubeconfig", c.Kubeconfig, "--node-name", c.NodeName)
	// Healthy before the churn: everything ok or not applicable.
	waitFor(t, "every check ok or not applicable", 3*time.Minute, func() (bool, string) {
		a.alive(t)
		bad := soakBad(t, a)
		return len(bad) == 0 && soakAllRan(t, a), strings.Join(bad, "; ")
	})
	runsBefore := soakRuns(t, a)
	start := time.Now()
	t.Logf("churn for %s in %s mode", d, mode)

	st := &soakStats{podsSeen: map[string]bool{}}
	cctx, stop := context.WithTimeout(ctx, d)
	defer stop()
	var wg sync.WaitGroup
	every := func(period time.Duration, f func(i int) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-cctx.Done():
					return
				case <-time.After(period):
				}
				if err := f(i); err != nil && cctx.Err() == nil {
					st.add(func(s *soakStats) { s.errs++ })
					t.Logf("churn: %v", err)
				}
			}
		}()
	}
	cs := c.Client
	every(20*time.Second, func(i int) error { // a rolling update
		patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{"soak/revision":"%d"}}}}}`, i)
		_, err := cs.AppsV1().Deployments(ns).Patch(cctx, "roll", types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{})
		st.add(func(s *soakStats) { s.revisions++ })
		return err
	})
	every(15*time.Second, func(i int) error { // scale up to 15 and back to 1
		n := []int32{15, 1}[i%2]
		_, err := cs.AppsV1().Deployments(ns).Patch(cctx, "scale", types.MergePatchType, []byte(fmt.Sprintf(`{"spec":{"replicas":%d}}`, n)), metav1.PatchOptions{})
		st.add(func(s *soakStats) { s.scales++ })
		return err
	})
	every(7*time.Second, func(i int) error { // pods deleted, with and without grace
		pods, err := cs.CoreV1().Pods(ns).List(cctx, metav1.ListOptions{LabelSelector: "app=roll"})
		if err != nil || len(pods.Items) == 0 {
			return err
		}
		p := pods.Items[i%len(pods.Items)]
		opts := metav1.DeleteOptions{}
		if i%2 == 1 {
			zero := int64(0)
			opts.GracePeriodSeconds = &zero
		}
		if err := cs.CoreV1().Pods(ns).Delete(cctx, p.Name, opts); err != nil {
			if apierrors.IsNotFound(err) {
				return nil // the rollout got there first
			}
			return err
		}
		st.add(func(s *soakStats) {
			if i%2 == 1 {
				s.deletedNow++
			} else {
				s.deletedGrace++
			}
		})
		return nil
	})
	every(15*time.Second, func(i int) error { // Jobs that complete
		pod := c.PodSpec(harness.PodOptions{Namespace: ns, Name: "job", Command: []string{"/bin/sh", "-c", "sleep 2; exit 0"}})
		pod.Spec.RestartPolicy = []corev1.RestartPolicy{corev1.RestartPolicyNever, corev1.RestartPolicyOnFailure}[i%2]
		job := &batchv1.Job{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("job-%d", i), Namespace: ns, Labels: map[string]string{harness.ManagedLabel: "true"}},
			Spec:       batchv1.JobSpec{Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: pod.Labels}, Spec: pod.Spec}},
		}
		_, err := cs.BatchV1().Jobs(ns).Create(cctx, job, metav1.CreateOptions{})
		st.add(func(s *soakStats) { s.jobs++ })
		return err
	})
	every(4*time.Second, func(i int) error { // Services created, changed, deleted
		name := fmt.Sprintf("svc-%d", i)
		if _, err := c.CreateService(cctx, ns, name, map[string]string{"app": "roll"}, 80, 8080); err != nil {
			return err
		}
		st.add(func(s *soakStats) { s.svcCreated++ })
		if i >= 2 {
			old := fmt.Sprintf("svc-%d", i-2)
			svc, err := cs.CoreV1().Services(ns).Get(cctx, old, metav1.GetOptions{})
			if err != nil {
				return err
			}
			svc.Spec.Ports[0].Port = 81
			svc.Spec.Ports[0].TargetPort = intstr.FromInt32(8080)
			if _, err := cs.CoreV1().Services(ns).Update(cctx, svc, metav1.UpdateOptions{}); err != nil {
				return err
			}
			st.add(func(s *soakStats) { s.svcChanged++ })
		}
		if i >= 4 {
			if err := cs.CoreV1().Services(ns).Delete(cctx, fmt.Sprintf("svc-%d", i-4), metav1.DeleteOptions{}); err != nil {
				return err
			}
			st.add(func(s *soakStats) { s.svcDeleted++ })
		}
		return nil
	})
	restartAt := func(at time.Duration, name string, count func(s *soakStats)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-cctx.Done():
				return
			case <-time.After(at):
			}
			restart, err := c.Kill(ctx, name)
			if err == nil {
				err = restart(ctx)
			}
			if err != nil {
				t.Errorf("restart %s: %v", name, err)
				return
			}
			st.add(count)
			t.Logf("%s restarted at %s", name, time.Since(start).Round(time.Second))
		}()
	}
	restartAt(d/3, "kube-proxy", func(s *soakStats) { s.kubeProxyRestarts++ })
	restartAt(2*d/3, "kubelet", func(s *soakStats) { s.kubeletRestarts++ })

	// Watch: every second, no check may say warning or problem and no
	// owned condition may be True.
	seen := map[string]int{}
	samples := 0
	for cctx.Err() == nil {
		a.alive(t)
		for _, b := range soakBad(t, a) {
			if seen[b] == 0 {
				t.Errorf("during the churn (%s in): %s", time.Since(start).Round(time.Second), b)
			}
			seen[b]++
		}
		if pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{}); err == nil {
			st.add(func(s *soakStats) {
				for _, p := range pods.Items {
					s.podsSeen[p.Name] = true
				}
			})
		}
		samples++
		time.Sleep(time.Second)
	}
	wg.Wait()
	// Let the last changes settle through one more round of every check.
	settle := time.Now().Add(70 * time.Second)
	for time.Now().Before(settle) {
		for _, b := range soakBad(t, a) {
			if seen[b] == 0 {
				t.Errorf("after the churn: %s", b)
			}
			seen[b]++
		}
		samples++
		time.Sleep(time.Second)
	}

	runsAfter := soakRuns(t, a)
	intervals := checkIntervals(t, bin)
	var stale []string
	total := 0.0
	for chk, n := range runsAfter {
		total += n - runsBefore[chk]
		if n <= runsBefore[chk] && intervals[chk] < time.Since(start) {
			stale = append(stale, chk)
		}
	}
	if len(stale) > 0 {
		t.Errorf("checks that did not run during the soak: %v", stale)
	}
	events, err := cs.CoreV1().Events("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var ours []string
	for _, e := range events.Items {
		if e.Source.Component == "node-doctor" || e.ReportingController == "node-doctor" {
			ours = append(ours, fmt.Sprintf("%s %s/%s %s: %s", e.Type, e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Reason, e.Message))
		}
	}
	if len(ours) > 0 {
		t.Errorf("%d Events from node-doctor during the soak:\n%s", len(ours), strings.Join(ours, "\n"))
	}
	st.mu.Lock()
	t.Logf("soak %s (%s mode): %d revisions, %d scale changes, %d Jobs, %d pods seen, %d/%d pods deleted with/without grace, Services %d created / %d changed / %d deleted, %d kube-proxy and %d kubelet restarts, %d churn errors; %d samples; %g check runs (kube-proxy-rules %g, cri-sandboxes %g, kubelet-health %g); findings: %d distinct bad, %d Events",
		d, mode, st.revisions, st.scales, st.jobs, len(st.podsSeen), st.deletedGrace, st.deletedNow, st.svcCreated, st.svcChanged, st.svcDeleted,
		st.kubeProxyRestarts, st.kubeletRestarts, st.errs, samples, total,
		runsAfter["kube-proxy-rules"]-runsBefore["kube-proxy-rules"], runsAfter["cri-sandboxes"]-runsBefore["cri-sandboxes"], runsAfter["kubelet-health"]-runsBefore["kubelet-health"],
		len(seen), len(ours))
	st.mu.Unlock()

	// The break at the end: the soak must not pass by seeing nothing.
	svc := kubeproxy.ServicePortName{Namespace: ns, Name: "web", Port: "http", Protocol: "tcp"}
	// Not restored from a snapshot: after the churn kube-proxy may be
	// rewriting its rules while one is taken, and the node's teardown
	// removes every kube-proxy rule (kube-proxy --cleanup, then a sweep of
	// the KUBE-* chains) right after this test.
	if mode == "iptables" {
		run(t, "iptables-nft", "-t", "nat", "-F", kubeproxy.IPTablesChainsFor(svc).SVC)
	} else {
		run(t, "nft", "flush", "chain", "ip", "kube-proxy", kubeproxy.NFTablesChainsFor(svc).Service)
	}
	_ = web
	broke := time.Now()
	a.waitReason(t, "kube-proxy-rules", "EndpointMissing", 3*time.Minute)
	t.Logf("end-of-soak break found %s after it was made", time.Since(broke).Round(time.Second))
}

// soakBad lists every check not ok or not applicable, and every owned
// condition True.
func soakBad(t *testing.T, a *metricsAgent) []string {
	t.Helper()
	m, err := a.scrape()
	if err != nil {
		return []string{"scrape: " + err.Error()}
	}
	var out []string
	for k, v := range m {
		if v != 1 {
			continue
		}
		switch {
		case strings.HasPrefix(k, "node_doctor_check_status{") && !strings.Contains(k, `status="ok"`) && !strings.Contains(k, `status="not_applicable"`):
			chk := strings.SplitN(strings.SplitN(k, `check="`, 2)[1], `"`, 2)[0]
			out = append(out, fmt.Sprintf("%s %v", k, sorted(reasons(m, chk))))
		case strings.HasPrefix(k, "node_doctor_kube_node_condition{") && strings.Contains(k, `status="True"`):
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// soakRuns is each check's run count.
func soakRuns(t *testing.T, a *metricsAgent) map[string]float64 {
	t.Helper()
	m, err := a.scrape()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for k, v := range m {
		if rest, ok := strings.CutPrefix(k, `node_doctor_check_duration_seconds_count{check="`); ok {
			out[strings.SplitN(rest, `"`, 2)[0]] = v
		}
	}
	return out
}

func soakAllRan(t *testing.T, a *metricsAgent) bool {
	runs := soakRuns(t, a)
	for _, n := range runs {
		if n == 0 {
			return false
		}
	}
	return len(runs) > 0
}

// checkIntervals reads each check's default interval from `check --list`.
func checkIntervals(t *testing.T, bin string) map[string]time.Duration {
	t.Helper()
	out, err := exec.Command(bin, "check", "--list").Output()
	if err != nil {
		t.Fatalf("check --list: %v", err)
	}
	m := map[string]time.Duration{}
	for _, l := range strings.Split(string(out), "\n")[1:] {
		f := strings.Fields(l)
		if len(f) < 3 {
			continue
		}
		if d, err := time.ParseDuration(f[2]); err == nil {
			m[f[0]] = d
		}
	}
	return m
}
