package main

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const npdConfig = "../../pkg/kernel/testdata/npd-config"

// TestRunTakesNPDArgs starts `run` with the arguments of NPD's own
// DaemonSet and more of its flags: it serves where NPD served its metrics,
// runs the system-log monitors, says why it skips what it does not run,
// and exposes NPD's problem_gauge.
func TestRunTakesNPDArgs(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	_ = l.Close()
	cfg := func(names ...string) string {
		for i, n := range names {
			names[i] = filepath.Join(npdConfig, n)
		}
		return strings.Join(names, ",")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "run", "--logtostderr",
		"--config.system-log-monitor="+cfg("kernel-monitor.json", "readonly-monitor.json", "docker-monitor.json"),
		"--config.custom-plugin-monitor="+cfg("health-checker-kubelet.json", "health-checker-containerd.json", "docker-monitor-counter.json"),
		"--config.system-stats-monitor="+cfg("system-stats-monitor.json"),
		"--prometheus-address=127.0.0.1", "--prometheus-port="+port,
		"--enable-k8s-exporter=false", "--hostname-override=npd-node",
		"--only", "kernel-log,ip-forward")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	var logged []string
	sc := bufio.NewScanner(stderr)
	addr := ""
	for addr == "" && sc.Scan() {
		logged = append(logged, sc.Text())
		if m := addrRe.FindStringSubmatch(sc.Text()); m != nil {
			addr = m[1]
		}
	}
	go func() {
		for sc.Scan() {
		}
	}()
	log := strings.Join(logged, "\n")
	if addr != "127.0.0.1:"+port {
		t.Fatalf("serves on %q, want NPD's --prometheus-address/--prometheus-port 127.0.0.1:%s; log:\n%s", addr, port, log)
	}
	for _, want := range []string{
		`node-problem-detector health-checker mapped onto kubelet-health (condition KubeletUnhealthy)" file=` + filepath.Join(npdConfig, "health-checker-kubelet.json") + ` component=kubelet cooldown=1m0s healthz_timeout=10s interval=10s timeout=14s`,
		`repair is off: node-doctor does not restart kubelet`,
		`mapped onto cri-runtime and cri-runtime-ready (condition ContainerRuntimeProblem, where NPD's is ContainerRuntimeUnhealthy)`,
		`not run: node-problem-detector monitor config" file=` + filepath.Join(npdConfig, "docker-monitor-counter.json"),
		`not run: node-problem-detector system-stats-monitor config`,
		`reporting to Kubernetes is off" why="reporting to Kubernetes turned off by --enable-k8s-exporter=false"`,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	base := "http://" + addr
	var code int
	var body string
	for i := 0; i < 200; i++ {
		if code, _ = get(t, base+"/readyz"); code == http.StatusOK {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code != http.StatusOK {
		t.Fatalf("/readyz %d", code)
	}
	_, body = get(t, base+"/metrics")
	for _, want := range []string{
		`problem_gauge{reason="KernelHasNoDeadlock",type="KernelDeadlock"} 0`,
		`problem_gauge{reason="FilesystemIsNotReadOnly",type="ReadonlyFilesystem"} 0`,
		`node_doctor_check_last_run_timestamp_seconds{check="kernel-log"}`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if t.Failed() {
		for _, l := range strings.Split(body, "\n") {
			if strings.Contains(l, "kernel-log") || strings.HasPrefix(l, "problem_") {
				t.Log(l)
			}
		}
	}
}

func TestRunNPDArgsRefused(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--metrics-address=127.0.0.1:0", "--config.system-log-monitor=/nonexistent/kernel-monitor.json"}, "/nonexistent/kernel-monitor.json"},
		{[]string{"--metrics-address=127.0.0.1:0", "--apiserver-override=https://10.0.0.1?inClusterConfig=false"}, "give --kubeconfig"},
		{[]string{"--prometheus-address=localhost", "--prometheus-port=1"}, "not an IP address"},
	} {
		_, stderr, code := runBinary(t, nil, append([]string{"run"}, tc.args...)...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tc.args, code, stderr, tc.want)
		}
	}
}
