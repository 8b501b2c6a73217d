package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/node-doctor/node-doctor/internal/testmetrics"
)

// floodRules watch one log file: a permanent condition with a recovery line,
// and a temporary finding the flood repeats.
const floodRules = `plugin: filelog
logPath: /var/log/kern.log
lookback: 5m
source: flood-test
conditions:
- {type: ReadonlyFilesystem, reason: FilesystemIsNotReadOnly, message: no read-only filesystems}
rules:
- type: permanent
  condition: ReadonlyFilesystem
  reason: FilesystemIsReadOnly
  pattern: 'EXT4-fs \((?P<device>[^)]+)\): Remounting filesystem read-only'
  message: '$device went read-only'
  recovery: 'EXT4-fs \(\S+\): re-mounted.* r/w'
- type: temporary
  reason: ConntrackTableFull
  severity: problem
  pattern: 'nf_conntrack: table full, dropping packet'
`

// floodLines is how many matching lines the flood writes.
const floodLines = 200_000

// memoryLimit bounds the agent's RSS during the flood, well under the
// DaemonSet's limit (deploy/daemonset.yaml), which leaves room for the rule tools.
const memoryLimit = 128 << 20

// TestRunLogFileFloodAndRecreate runs the agent as a process on a kernel log
// file: a read-only filesystem is reported; a flood of matching lines is
// read with bounded memory, the findings beyond the cap are dropped and
// counted, and the condition is not lost; then the file is deleted and
// created again, and the recovery line written to the new file clears the
// condition. The agent's CPU time for the flood is logged.
func TestRunLogFileFloodAndRecreate(t *testing.T) {
	root := t.TempDir()
	logDir := filepath.Join(root, "var", "log")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	kern := filepath.Join(logDir, "kern.log")
	if err := os.WriteFile(kern, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cfgDir := t.TempDir()
	rules := filepath.Join(cfgDir, "rules.yaml")
	cfg := filepath.Join(cfgDir, "config.yaml")
	if err := os.WriteFile(rules, []byte(floodRules), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`checks:
  kernel-log: {interval: 2s, timeout: 2s, defaultRules: false, ruleFiles: [%q], maxPendingFindings: 100}
`, rules)), 0o644); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(binary, "run", "--host-root", root, "--config", cfg, "--only", "kernel-log", "--metrics-address", "127.0.0.1:0")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	addr := make(chan string, 1)
	var logged []string
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			l := sc.Text()
			logged = append(logged, l)
			if m := addrRe.FindStringSubmatch(l); m != nil {
				addr <- m[1]
			}
		}
		done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("agent exit: %v", err)
			}
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			t.Error("agent did not stop within 15s of SIGTERM")
		}
		if t.Failed() {
			t.Logf("agent log:\n%s", strings.Join(logged, "\n"))
		}
		for _, l := range logged {
			if strings.Contains(l, "panic") {
				t.Errorf("agent logged a panic: %s", l)
			}
		}
	})
	var base string
	select {
	case a := <-addr:
		base = "http://" + a + "/metrics"
	case <-time.After(time.Minute):
		t.Fatal("agent never said where it serves")
	}
	metrics := func() map[string]float64 {
		t.Helper()
		m, err := testmetrics.Scrape(context.Background(), &http.Client{Timeout: 5 * time.Second}, base)
		if err != nil {
			t.Fatalf("scrape: %v", err)
		}
		return m
	}
	const ro = `node_doctor_findings{check="kernel-log",condition="ReadonlyFilesystem",reason="FilesystemIsReadOnly",severity="problem"}`
	waitMetric := func(what string, ok func(map[string]float64) bool) map[string]float64 {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for {
			m := metrics()
			if ok(m) {
				return m
			}
			if time.Now().After(deadline) {
				var kl []string
				for k, v := range m {
					if strings.Contains(k, "kernel") {
						kl = append(kl, fmt.Sprintf("%s %g", k, v))
					}
				}
				t.Fatalf("no %s within a minute; kernel metrics:\n%s", what, strings.Join(kl, "\n"))
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	appendLines := func(path string, lines ...string) {
		t.Helper()
		f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		w := bufio.NewWriterSize(f, 1<<20)
		for _, l := range lines {
			fmt.Fprintf(w, "%s node-1 kernel: [ 5214.763101] %s\n", time.Now().Format(time.Stamp), l)
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}

	appendLines(kern, "EXT4-fs (sda1): Remounting filesystem read-only")
	waitMetric("read-only finding", func(m map[string]float64) bool { return m[ro] == 1 })

	before := metrics()
	flood := make([]string, 10_000)
	for i := range flood {
		flood[i] = "nf_conntrack: table full, dropping packet"
	}
	start := time.Now()
	for range floodLines / len(flood) {
		appendLines(kern, flood...)
	}
	read := before[`node_doctor_kernel_log_lines_read_total{source="flood-test"}`]
	after := waitMetric("the flood read", func(m map[string]float64) bool {
		return m[`node_doctor_kernel_log_lines_read_total{source="flood-test"}`] >= read+floodLines
	})
	// One more run, so the dropped findings are counted and reported.
	after = waitMetric("drops counted", func(m map[string]float64) bool {
		return m[`node_doctor_check_duration_seconds_count{check="kernel-log"}`] >= after[`node_doctor_check_duration_seconds_count{check="kernel-log"}`]+2
	})
	wall := time.Since(start)
	cpu := after["process_cpu_seconds_total"] - before["process_cpu_seconds_total"]
	dropped := after[`node_doctor_kernel_log_findings_dropped_total{source="flood-test"}`] - before[`node_doctor_kernel_log_findings_dropped_total{source="flood-test"}`]
	rss := after["process_resident_memory_bytes"]
	t.Logf("flood of %d lines: read in %s wall, %.2fs agent CPU; %g findings dropped; RSS %.1f MiB",
		floodLines, wall.Round(10*time.Millisecond), cpu, dropped, rss/(1<<20))
	if dropped < floodLines-1000 {
		t.Errorf("findings dropped: %g, want at least %d (the cap keeps 100 per run)", dropped, floodLines-1000)
	}
	if after[ro] != 1 {
		t.Error("the read-only condition was lost in the flood")
	}
	if rss > memoryLimit {
		t.Errorf("RSS %.1f MiB over %d MiB", rss/(1<<20), memoryLimit>>20)
	}

	// Deleted and created again: the agent follows the new file.
	if err := os.Remove(kern); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // the reader polls once a second
	appendLines(kern, "EXT4-fs (sda1): re-mounted. Opts: (null). Quota mode: none. r/w")
	waitMetric("recovery read from the new file", func(m map[string]float64) bool { return m[ro] == 0 })
	if st := metrics()[`node_doctor_check_status{check="kernel-log",status="error"}`]; st == 1 {
		t.Error("kernel-log could not run after the file was recreated")
	}
}
