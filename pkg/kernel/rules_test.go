package kernel

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/node-doctor/node-doctor/pkg/check"
)

func loadTestRules(t testing.TB, name string) *RuleSet {
	t.Helper()
	set, err := LoadRuleFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return set
}

func reasons(fs []check.Finding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.Reason)
	}
	return out
}

// TestNPDRuleFileBehavesLikeNPD loads a system-log-monitor file in NPD's
// documented format and checks NPD's semantics: temporary rules give
// events, permanent ones set their condition and keep it, patterns must
// match up to the end of the newest line, and a pattern with \n is matched
// over the last bufferSize lines.
func TestNPDRuleFileBehavesLikeNPD(t *testing.T) {
	set := loadTestRules(t, "npd-kernel-monitor.json")
	if set.Plugin != PluginKmsg || set.LogPath != "dev/kmsg" || set.Lookback != 5*time.Minute || set.BufferSize != 10 || set.Name != "kernel-monitor" {
		t.Errorf("file settings = %s %s %s %d %s", set.Plugin, set.LogPath, set.Lookback, set.BufferSize, set.Name)
	}
	if len(set.Rules) != 12 || len(set.Conditions) != 2 {
		t.Fatalf("loaded %d rules and %d conditions, want 12 and 2", len(set.Rules), len(set.Conditions))
	}
	now := time.Date(2026, 11, 23, 14, 0, 0, 0, time.UTC)
	mo := NewMonitor(set, clocktesting.NewFakeClock(now), 0)
	feedAll := func(lines ...string) {
		for _, l := range lines {
			mo.HandleLine(Line{Time: now, Text: []byte(l)})
		}
	}

	// Healthy: each condition at its default reason.
	got := mo.Findings(now)
	if r := strings.Join(reasons(got), ","); r != "KernelHasNoDeadlock,FilesystemIsNotReadOnly" {
		t.Fatalf("healthy findings = %s", r)
	}

	// Temporary rules: one event each, then gone.
	feedAll(
		"Out of memory: Killed process 1234 (stress) total-vm:1052620kB, anon-rss:1048640kB, file-rss:896kB, shmem-rss:0kB",
		"INFO: task kworker/1:2:99 blocked for more than 120 seconds.",
		"EXT4-fs error (device sda1): ext4_lookup:1855: inode #1311: comm ls: deleted inode referenced: 1312",
		// NPD anchors patterns at the end of the buffer: this one does
		// not reach the end of the line, so NPD does not match it.
		"divide error: 0000 [#1] SMP PTI",
	)
	got = mo.Findings(now)
	if r := strings.Join(reasons(got), ","); r != "OOMKilling,TaskHung,Ext4Error,KernelHasNoDeadlock,FilesystemIsNotReadOnly" {
		t.Fatalf("after temporary lines: %s", r)
	}
	if f := got[0]; f.Severity != check.SeverityWarning || f.Condition != "" || !strings.Contains(f.Message, "Killed process 1234 (stress)") {
		t.Errorf("OOM finding = %+v", f)
	}
	if r := strings.Join(reasons(mo.Findings(now)), ","); r != "KernelHasNoDeadlock,FilesystemIsNotReadOnly" {
		t.Errorf("temporary findings were reported twice: %s", r)
	}

	// Multi-line: the oops header and the CPU line, consecutive.
	feedAll("general protection fault: 0000 [#1] SMP NOPTI")
	if r := reasons(mo.Findings(now)); len(r) != 2 {
		t.Errorf("header alone matched: %v", r)
	}
	feedAll("CPU: 3 PID: 4242 Comm: stress Not tainted 6.1.0-27-amd64 #1 Debian 6.1.115-1")
	got = mo.Findings(now)
	if len(got) != 3 || got[0].Reason != "KernelOopsWithCPU" || !strings.Contains(got[0].Details["log"], "SMP NOPTI\nCPU: 3 PID: 4242") ||
		!strings.HasSuffix(got[0].Message, " (multi-line)") {
		t.Errorf("multi-line rule: %+v", got)
	}
	feedAll("some line in between", "CPU: 3 PID: 4242 Comm: stress Not tainted")
	if r := reasons(mo.Findings(now)); len(r) != 2 {
		t.Errorf("CPU line without the header right before it matched: %v", r)
	}

	// Permanent: the condition turns on and stays on, as in NPD.
	feedAll("INFO: task docker:1234 blocked for more than 120 seconds.")
	for range 2 {
		got = mo.Findings(now.Add(24 * time.Hour))
		var dl *check.Finding
		for i := range got {
			if got[i].Condition == "KernelDeadlock" {
				dl = &got[i]
			}
		}
		if dl == nil || dl.Severity != check.SeverityProblem || dl.Reason != "DockerHung" || !dl.Time.Equal(now) {
			t.Fatalf("KernelDeadlock finding = %+v", dl)
		}
	}
	st := mo.Stats()
	if st.Lines != 9 || st.MatchesByReason["DockerHung"] != 1 || st.MatchesByReason["TaskHung"] != 2 {
		t.Errorf("stats = %+v", st)
	}
}

func TestNPDFilelogRuleFile(t *testing.T) {
	set := loadTestRules(t, "npd-kernel-monitor-filelog.json")
	if set.Plugin != PluginFilelog || set.LogPath != "var/log/kern.log" {
		t.Fatalf("plugin %s path %s", set.Plugin, set.LogPath)
	}
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "var/log"), 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile("testdata/kern.log")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "var/log/kern.log"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 23, 14, 21, 0, 0, time.UTC)
	clk := clocktesting.NewFakeClock(now)
	mo := NewMonitor(set, clk, 0)
	src := &FileSource{FS: os.DirFS(root), Path: set.LogPath, Clock: clk, Parse: set.Parse}
	if err := src.Read(context.Background(), now.Add(-set.Lookback), false, mo); err != nil {
		t.Fatal(err)
	}
	got := mo.Findings(now)
	if len(got) != 1 || got[0].Reason != "OOMKilling" || !got[0].Time.Equal(time.Date(2026, 11, 23, 14, 20, 1, 0, time.UTC)) {
		t.Errorf("findings = %+v", got)
	}
}

func TestParseRulesRejectsInvalidRules(t *testing.T) {
	base := `{"plugin":"kmsg","conditions":[{"type":"KernelDeadlock","reason":"KernelHasNoDeadlock"}],"rules":[%s]}`
	for _, tc := range []struct {
		name, data string
		want       []string
	}{
		{"bad.json", strings.Replace(base, "%s", `{"type":"temporary","reason":"Bad","pattern":"a(b"}`, 1),
			[]string{"bad.json", "rules[0] (Bad)", "missing closing )"}},
		{"cond.json", strings.Replace(base, "%s", `{"type":"temporary","reason":"A","pattern":"aaa"},{"type":"permanent","condition":"Nope","reason":"B","pattern":"x+y"}`, 1),
			[]string{"cond.json", "rules[1] (B)", `condition "Nope" is not in the file's conditions`}},
		{"missing.json", strings.Replace(base, "%s", `{"type":"temporary","pattern":"aaa"},{"reason":"X","pattern":"bbb"},{"type":"temporary","reason":"Y"}`, 1),
			[]string{"rules[0]: reason is required", "rules[1] (X): type is required", "rules[2] (Y): pattern is required"}},
		{"type.json", strings.Replace(base, "%s", `{"type":"sometimes","reason":"A","pattern":"aaa"}`, 1),
			[]string{`type "sometimes"`}},
		{"everything.json", strings.Replace(base, "%s", `{"type":"temporary","reason":"A","pattern":".*"}`, 1),
			[]string{"matches an empty line"}},
		{"unknown.json", `{"plugin":"kmsg","rulez":[]}`, []string{"unknown field", "rulez"}},
		{"journald.json", `{"plugin":"journald","pluginConfig":{"source":"kubelet","timestamp":"^.{15}","message":"(.*)","timestampFormat":"Jan _2 15:04:05"},"rules":[{"type":"temporary","reason":"A","pattern":"aaa"}]}`,
			[]string{"journal entries carry their own"}},
		{"units.yaml", "plugin: journald\npluginConfig: {units: [kubelet.service, 'a/b']}\nrules:\n- {type: temporary, reason: A, pattern: aaa}\n", []string{`pluginConfig.units[1] "a/b"`}},
		{"kmsgunits.yaml", "pluginConfig: {units: [kubelet]}\nrules:\n- {type: temporary, reason: A, pattern: aaa}\n", []string{"identifiers and units are for plugin journald"}},
		{"idents.yaml", "plugin: journald\npluginConfig: {identifiers: ['']}\nrules:\n- {type: temporary, reason: A, pattern: aaa}\n", []string{`pluginConfig.identifiers[0] ""`}},
		{"filelog.json", `{"plugin":"filelog","rules":[{"type":"temporary","reason":"A","pattern":"aaa"}]}`, []string{"logPath: required"}},
		{"lookback.json", `{"lookback":"five minutes","rules":[{"type":"temporary","reason":"A","pattern":"aaa"}]}`, []string{`lookback "five minutes"`}},
		{"norules.yaml", "plugin: kmsg\n", []string{"no rules"}},
		{"count.yaml", "rules:\n- {type: temporary, reason: A, pattern: aaa, count: 3}\n", []string{"rules[0] (A): count 3 needs a window"}},
		{"recovery.yaml", "rules:\n- {type: temporary, reason: A, pattern: aaa, recovery: bbb}\n", []string{"only to permanent rules"}},
		{"severity.yaml", "rules:\n- {type: temporary, reason: A, pattern: aaa, severity: ok}\n", []string{`severity "ok"`}},
		{"skip.yaml", "skip: ['(']\nrules:\n- {type: temporary, reason: A, pattern: aaa, skip: ['[']}\n", []string{"skip[0]: error parsing", "rules[0] (A): skip[0]"}},
		{"typo.yaml", "rules:\n- {type: temporary, reason: A, patern: aaa}\n", []string{"field patern not found"}},
		{"dup.yaml", "conditions: [{type: A, reason: B}, {type: A, reason: C}]\nrules:\n- {type: temporary, reason: A, pattern: aaa}\n", []string{"duplicate condition type"}},
	} {
		_, err := ParseRules(tc.name, []byte(tc.data))
		if err == nil {
			t.Errorf("%s: loaded, want an error", tc.name)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not say %q", tc.name, err, w)
			}
		}
		if !strings.Contains(err.Error(), tc.name) {
			t.Errorf("%s: error %q does not name the file", tc.name, err)
		}
	}
}

// TestNativeRuleExtras covers what node-doctor's form adds: recovery
// patterns, quiet periods, frequency thresholds, severity and skip lists.
func TestNativeRuleExtras(t *testing.T) {
	set, err := ParseRules("extras.yaml", []byte(`
source: extras
skip: ['node-doctor-ignore']
conditions:
- {type: ReadonlyFilesystem, reason: FilesystemIsNotReadOnly, message: fine}
- {type: KernelDeadlock, reason: KernelHasNoDeadlock}
rules:
- type: permanent
  condition: ReadonlyFilesystem
  reason: FilesystemIsReadOnly
  pattern: 'EXT4-fs \((?P<device>\w+)\): Remounting filesystem read-only'
  recovery: 'EXT4-fs \(\w+\): re-mounted.* r/w'
  message: '$device is read-only'
- type: permanent
  condition: KernelDeadlock
  reason: DockerHung
  pattern: 'task docker:\d+ blocked'
  quietPeriod: 10m
- type: temporary
  reason: ConntrackFull
  severity: problem
  pattern: 'table full, dropping packet'
  count: 3
  window: 1m
  skip: ['ignore-this-one']
`))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 23, 14, 0, 0, 0, time.UTC)
	mo := NewMonitor(set, clocktesting.NewFakeClock(t0), 0)
	at := func(d time.Duration, l string) { mo.HandleLine(Line{Time: t0.Add(d), Text: []byte(l)}) }
	cond := func(now time.Time, typ string) check.Finding {
		for _, f := range mo.Findings(now) {
			if f.Condition == typ {
				return f
			}
		}
		t.Fatalf("no %s finding", typ)
		return check.Finding{}
	}

	at(0, "EXT4-fs (sda1): Remounting filesystem read-only")
	at(0, "task docker:12 blocked for more than 120 seconds.")
	if f := cond(t0, "ReadonlyFilesystem"); f.Reason != "FilesystemIsReadOnly" || !strings.HasPrefix(f.Message, "sda1 is read-only") {
		t.Errorf("read-only finding = %+v", f)
	}
	at(time.Minute, "EXT4-fs (sda1): re-mounted 4f5c6d7e-0000-0000-0000-000000000000 r/w. Quota mode: none.")
	if f := cond(t0.Add(time.Minute), "ReadonlyFilesystem"); f.Severity != check.SeverityOK || f.Reason != "FilesystemIsNotReadOnly" {
		t.Errorf("after recovery: %+v", f)
	}
	if f := cond(t0.Add(9*time.Minute), "KernelDeadlock"); f.Reason != "DockerHung" {
		t.Errorf("within the quiet period: %+v", f)
	}
	at(9*time.Minute, "task docker:12 blocked for more than 600 seconds.")
	if f := cond(t0.Add(18*time.Minute), "KernelDeadlock"); f.Reason != "DockerHung" || f.Details["count"] != "2" || !f.Time.Equal(t0) {
		t.Errorf("a repeat restarts the quiet period: %+v", f)
	}
	if f := cond(t0.Add(19*time.Minute), "KernelDeadlock"); f.Reason != "KernelHasNoDeadlock" {
		t.Errorf("after the quiet period: %+v", f)
	}

	// Frequency: 3 within a minute; skipped lines do not count.
	at(20*time.Minute, "nf_conntrack: table full, dropping packet")
	at(21*time.Minute+1, "nf_conntrack: table full, dropping packet")
	at(21*time.Minute+2, "nf_conntrack: table full, dropping packet ignore-this-one")
	at(21*time.Minute+3, "nf_conntrack: table full, dropping packet node-doctor-ignore")
	at(21*time.Minute+4, "nf_conntrack: table full, dropping packet")
	var temp []check.Finding
	for _, f := range mo.Findings(t0.Add(22 * time.Minute)) {
		if f.Condition == "" {
			temp = append(temp, f)
		}
	}
	if len(temp) != 0 {
		t.Errorf("2 counted matches within the window fired: %+v", temp)
	}
	at(21*time.Minute+5, "nf_conntrack: table full, dropping packet")
	for _, f := range mo.Findings(t0.Add(22 * time.Minute)) {
		if f.Condition == "" {
			temp = append(temp, f)
		}
	}
	if len(temp) != 1 || temp[0].Severity != check.SeverityProblem || !strings.Contains(temp[0].Message, "3 times within 1m0s") {
		t.Errorf("3 matches within the window: %+v", temp)
	}
}

func FuzzParseRules(f *testing.F) {
	for _, name := range []string{"npd-kernel-monitor.json", "npd-kernel-monitor-filelog.json"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, true)
	}
	f.Add(defaultRulesYAML, false)
	f.Add([]byte("rules:\n- {type: permanent, condition: A, reason: B, pattern: 'x\\ny', recovery: z, quietPeriod: 1m, count: 2, window: 1m}\nconditions: [{type: A, reason: C}]\n"), false)
	lines := [][]byte{[]byte("x"), []byte("y"), []byte("Killed process 1 (a) total-vm:1kB, anon-rss:1kB, file-rss:1kB"), []byte("z")}
	f.Fuzz(func(t *testing.T, data []byte, isJSON bool) {
		name := "fuzz.yaml"
		if isJSON {
			name = "fuzz.json"
		}
		set, err := ParseRules(name, data)
		if err != nil {
			if !strings.Contains(err.Error(), name) {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		if len(set.Rules) == 0 || set.BufferSize < 1 {
			t.Fatalf("loaded a set with %d rules and buffer %d", len(set.Rules), set.BufferSize)
		}
		now := time.Unix(0, 0)
		mo := NewMonitor(set, clocktesting.NewFakeClock(now), 5)
		for _, l := range lines {
			mo.HandleLine(Line{Time: now, Text: l})
		}
		_ = mo.Findings(now)
	})
}

func TestJournaldRuleFiles(t *testing.T) {
	rule := `"rules":[{"type":"temporary","reason":"A","pattern":"aaa"}]`
	for _, tc := range []struct {
		name, data  string
		plugin, log string
		idents      []string
		units       []string
	}{
		{"kubelet.json", `{"plugin":"journald","pluginConfig":{"source":"kubelet"},"logPath":"/var/log/journal",` + rule + `}`,
			PluginJournald, "var/log/journal", []string{"kubelet"}, nil},
		{"nolog.json", `{"plugin":"journald","pluginConfig":{"source":"containerd"},` + rule + `}`,
			PluginJournald, "", []string{"containerd"}, nil},
		{"all.json", `{"plugin":"journald",` + rule + `}`, PluginJournald, "", nil, nil},
		{"kernel.json", `{"plugin":"journald","pluginConfig":{"source":"kernel"},"logPath":"/var/log/journal",` + rule + `}`,
			PluginKmsg, DefaultKmsgPath, nil, nil},
		{"native.yaml", "plugin: journald\npluginConfig: {identifiers: [kernel, kubelet], units: [containerd.service]}\n" +
			"rules:\n- {type: temporary, reason: A, pattern: aaa}\n",
			PluginJournald, "", []string{"kernel", "kubelet"}, []string{"containerd.service"}},
	} {
		set, err := ParseRules(tc.name, []byte(tc.data))
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if set.Plugin != tc.plugin || set.LogPath != tc.log || !slices.Equal(set.Identifiers, tc.idents) || !slices.Equal(set.Units, tc.units) {
			t.Errorf("%s: plugin %q log %q identifiers %q units %q", tc.name, set.Plugin, set.LogPath, set.Identifiers, set.Units)
		}
	}
}
