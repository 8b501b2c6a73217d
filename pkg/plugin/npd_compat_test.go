package plugin

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/node-doctor/node-doctor/pkg/check"
)

// npdConfig is NPD's config/ directory as shipped (pkg/kernel/testdata).
const npdConfig = "../kernel/testdata/npd-config"

// npdPluginFiles: what checks.custom-plugin.monitors makes of each custom
// plugin monitor NPD ships: run (""), or refused with this reason. Every
// other file of NPD's config/ is not a custom plugin monitor.
var npdPluginFiles = map[string]string{
	"custom-plugin-monitor.json":             "",
	"iptables-mode-monitor.json":             "",
	"network-problem-monitor.json":           "",
	"docker-monitor-counter.json":            "NPD's log-counter",
	"kernel-monitor-counter.json":            "NPD's log-counter",
	"systemd-monitor-counter.json":           "NPD's log-counter",
	"health-checker-containerd.json":         "natively over CRI",
	"health-checker-docker.json":             "natively over CRI",
	"health-checker-kubelet.json":            "kubelet-health does this natively",
	"windows-health-checker-containerd.json": "Windows-only",
	"windows-health-checker-docker.json":     "Windows-only",
	"windows-health-checker-kubelet.json":    "Windows-only",
	"windows-health-checker-kubeproxy.json":  "Windows-only",
	"windows-defender-monitor.json":          "Windows-only",
}

// npdWorkDir makes a working directory in which NPD's relative script paths
// (./config/plugin/...) name the vendored scripts, as in NPD's image, whose
// working directory holds config/.
func npdWorkDir(t *testing.T) {
	t.Helper()
	abs, err := filepath.Abs(npdConfig)
	if err != nil {
		t.Fatal(err)
	}
	wd := t.TempDir()
	if err := os.Symlink(abs, filepath.Join(wd, "config")); err != nil {
		t.Fatal(err)
	}
	t.Chdir(wd)
}

func TestNPDConfigFilesAsShipped(t *testing.T) {
	abs, err := filepath.Abs(npdConfig)
	if err != nil {
		t.Fatal(err)
	}
	npdWorkDir(t)
	var found []string
	err = filepath.WalkDir(abs, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".json") {
			found = append(found, filepath.ToSlash(strings.TrimPrefix(p, abs+"/")))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 28 {
		t.Fatalf("%d files in %s; NPD ships 28", len(found), npdConfig)
	}
	for _, name := range found {
		want, isPlugin := npdPluginFiles[name]
		m, err := LoadMonitor(filepath.Join(abs, name))
		switch {
		case !isPlugin && (err == nil || !strings.Contains(err.Error(), "not a custom plugin monitor")):
			t.Errorf("%s: %v, want refused as not a custom plugin monitor", name, err)
		case isPlugin && want == "" && err != nil:
			t.Errorf("%s: refused: %v", name, err)
		case isPlugin && want != "" && (err == nil || !strings.Contains(err.Error(), "refused: ") || !strings.Contains(err.Error(), want)):
			t.Errorf("%s: %v; want a refusal saying %q", name, err, want)
		case isPlugin && want == "" && len(m.Rules) == 0:
			t.Errorf("%s: no rules", name)
		}
	}

	m, err := LoadMonitor(filepath.Join(abs, "custom-plugin-monitor.json"))
	if err != nil {
		t.Fatal(err)
	}
	if m.Source != "ntp-custom-plugin-monitor" || m.InvokeInterval.String() != "30s" || m.Timeout.String() != "5s" ||
		m.MaxOutputLength != 80 || m.Concurrency != 3 || m.MessageChange || m.SkipInitialStatus ||
		len(m.Rules) != 2 || m.Rules[0].Timeout.String() != "3s" || m.Rules[0].Interval.String() != "30s" || !m.Rules[1].Permanent {
		t.Errorf("custom-plugin-monitor.json read as %+v", m)
	}
}

// TestNPDShippedScriptsRun runs NPD's own monitors and scripts, once, as
// the one-shot report does. What they say depends on this machine; that
// they run and answer in NPD's protocol does not.
func TestNPDShippedScriptsRun(t *testing.T) {
	if _, err := os.Stat("/bin/bash"); err != nil {
		t.Skip("NPD's scripts need /bin/bash:", err)
	}
	abs, err := filepath.Abs(npdConfig)
	if err != nil {
		t.Fatal(err)
	}
	npdWorkDir(t)
	// dns_problem.sh looks up kubernetes.default with getent, which would
	// ask the machine's resolver: tests send nothing off the machine, so
	// getent is a stub that answers "not found".
	stub := t.TempDir()
	if err := os.WriteFile(filepath.Join(stub, "getent"), []byte("#!/bin/sh\nexit 2\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", stub+":"+os.Getenv("PATH"))
	def := Plugins(nil)
	c := def.Check.(*Checker)
	for _, f := range []string{"custom-plugin-monitor.json", "iptables-mode-monitor.json", "network-problem-monitor.json"} {
		c.settings.Monitors = append(c.settings.Monitors, filepath.Join(abs, f))
	}
	if err := c.settings.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := def.ConditionTypes(); len(got) != 1 || got[0] != "NTPProblem" {
		t.Errorf("condition types %v, want NTPProblem", got)
	}
	fs, err := c.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var cond *check.Finding
	for i, f := range fs {
		t.Logf("%s %s %s %q", f.Severity, f.Condition, f.Reason, f.Message)
		if f.Condition == "NTPProblem" {
			cond = &fs[i]
		}
	}
	if cond == nil {
		t.Fatal("no NTPProblem finding")
	}
	// check_ntp.sh answers with exit 0 or 1 where systemctl exists, else 2.
	if !strings.Contains(cond.Message, "ntp") && !strings.Contains(cond.Message, "systemctl") {
		t.Errorf("NTPProblem message %q is not check_ntp.sh's", cond.Message)
	}
	dns := false
	for _, f := range fs {
		if f.Reason == "DNSUnreachable" {
			dns = strings.Contains(f.Message, "is not working")
		}
	}
	if !dns {
		t.Error("dns_problem.sh did not report the stubbed lookup failing")
	}
	for _, f := range fs {
		if f.Reason == "IPTablesVersionsMismatch" {
			// iptables_mode.sh echoes its status instead of exiting with it,
			// so it always exits 0: in NPD as here, it never reports.
			t.Errorf("iptables_mode.sh reported %q", f.Message)
		}
	}
}
