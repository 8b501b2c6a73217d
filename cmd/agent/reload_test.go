package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// configVolume lays out a directory as the kubelet writes a ConfigMap
// volume: a timestamped directory, ..data pointing at it, and config.yaml
// through ..data. swap changes it the way the kubelet's atomic writer does.
type configVolume struct {
	dir string
	n   int
}

func (v *configVolume) swap(t *testing.T, content string) {
	t.Helper()
	v.n++
	ts := "..2026_12_07_08_00_00." + strings.Repeat("0", 8) + string(rune('0'+v.n))
	if err := os.Mkdir(filepath.Join(v.dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(v.dir, ts, "config.yaml"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	old, _ := os.Readlink(filepath.Join(v.dir, "..data"))
	if err := os.Symlink(ts, filepath.Join(v.dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(v.dir, "..data_tmp"), filepath.Join(v.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if old != "" {
		_ = os.RemoveAll(filepath.Join(v.dir, old))
	}
}

type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) has(re *regexp.Regexp) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.lines {
		if re.MatchString(s) {
			return true
		}
	}
	return false
}

// A running agent takes a new config from a ConfigMap-style symlink swap,
// keeps the old one when the new one is bad, and reloads on SIGHUP.
func TestRunReloadsConfig(t *testing.T) {
	vol := &configVolume{dir: t.TempDir()}
	vol.swap(t, "checks:\n  hairpin:\n    interval: 30s\n")
	if err := os.Symlink("..data/config.yaml", filepath.Join(vol.dir, "config.yaml")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "run", "--metrics-address", "127.0.0.1:0",
		"--config", filepath.Join(vol.dir, "config.yaml"), "--config-poll-interval", "200ms")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	logs := &logLines{}
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			l := sc.Text()
			logs.mu.Lock()
			logs.lines = append(logs.lines, l)
			logs.mu.Unlock()
			if m := addrRe.FindStringSubmatch(l); m != nil {
				addrc <- m[1]
			}
		}
	}()
	var base string
	select {
	case a := <-addrc:
		base = "http://" + a
	case <-ctx.Done():
		t.Fatal("agent never said where it serves")
	}
	metrics := func() string {
		_, body := get(t, base+"/metrics")
		return body
	}
	waitFor := func(what string, ok func(string) bool) string {
		t.Helper()
		var body string
		for range 100 {
			if body = metrics(); ok(body) {
				return body
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("%s: never seen in /metrics:\n%s\nlog:\n%s", what, grepMetrics(body, "node_doctor_c"), strings.Join(logs.lines, "\n"))
		return ""
	}
	has := func(s ...string) func(string) bool {
		return func(body string) bool {
			for _, w := range s {
				if !strings.Contains(body, w) {
					return false
				}
			}
			return true
		}
	}
	waitFor("first runs", has(`node_doctor_check_interval_seconds{check="hairpin"} 30`,
		`node_doctor_check_duration_seconds_count{check="ip-forward"} 1`, `node_doctor_config_last_reload_success 1`))

	// A good config: hairpin's interval changes, bridge-netfilter is
	// turned off, the log level goes to debug, and logFormat (read at
	// start) is left for a restart.
	vol.swap(t, "logLevel: debug\nlogFormat: json\nchecks:\n  hairpin:\n    interval: 45s\n  bridge-netfilter:\n    enabled: false\n")
	body := waitFor("reload", has(`node_doctor_check_interval_seconds{check="hairpin"} 45`,
		`node_doctor_config_reload_total{result="success"} 1`))
	if strings.Contains(body, `check="bridge-netfilter"`) {
		t.Errorf("a disabled check keeps series:\n%s", grepMetrics(body, "bridge-netfilter"))
	}
	// ip-forward did not change: its counters go on, it is not rerun.
	if !strings.Contains(body, `node_doctor_check_duration_seconds_count{check="ip-forward"} 1`) {
		t.Errorf("unchanged ip-forward was restarted or reset:\n%s", grepMetrics(body, `ip-forward`))
	}
	if !logs.has(regexp.MustCompile(`needs a restart.*logFormat`)) {
		t.Error("restart-only logFormat change not logged")
	}
	waitLog := func(re string) {
		t.Helper()
		r := regexp.MustCompile(re)
		for range 50 {
			if logs.has(r) {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Errorf("log lacks %s", re)
	}
	waitLog(`level=DEBUG msg="check ran"`)

	// A bad config: counted, logged with why, the old one stays.
	vol.swap(t, "checks:\n  hairpin:\n    interval: 10ms\n")
	body = waitFor("failed reload", has(`node_doctor_config_reload_total{result="failure"} 1`, `node_doctor_config_last_reload_success 0`))
	if !strings.Contains(body, `node_doctor_check_interval_seconds{check="hairpin"} 45`) {
		t.Errorf("bad config changed the running one:\n%s", grepMetrics(body, "interval"))
	}
	waitLog(`config reload failed.*checks\.hairpin\.interval.*out of range`)

	// SIGHUP reads the file again, unchanged or not.
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor("SIGHUP reload", has(`node_doctor_config_reload_total{result="failure"} 2`))
	vol.swap(t, "checks:\n  hairpin:\n    interval: 1m\n")
	waitFor("reload after a failure", has(`node_doctor_check_interval_seconds{check="hairpin"} 60`,
		`node_doctor_config_reload_total{result="success"} 2`, `node_doctor_config_last_reload_success 1`,
		`node_doctor_check_interval_seconds{check="bridge-netfilter"}`))

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("agent did not exit cleanly: %v", err)
	}
}

func grepMetrics(body, s string) string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.Contains(l, s) && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
