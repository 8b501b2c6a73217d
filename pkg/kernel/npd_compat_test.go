package kernel

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/node-doctor/node-doctor/pkg/check"
)

// npdFiles is what node-doctor makes of each JSON file in NPD's config/
// directory as shipped (testdata/npd-config) in checks.kernel-log.ruleFiles:
// accepted, or refused with this reason. The custom plugin monitors it runs
// are refused here with a pointer to checks.custom-plugin.monitors, which
// runs them (pkg/plugin's TestNPDConfigFilesAsShipped).
var npdFiles = map[string]string{
	"abrt-adaptor.json":                       "",
	"disk-log-message-filelog.json":           "",
	"docker-monitor-filelog.json":             "",
	"docker-monitor.json":                     "",
	"kernel-monitor-filelog.json":             "",
	"kernel-monitor.json":                     "",
	"readonly-monitor.json":                   "",
	"systemd-monitor.json":                    "",
	"custom-plugin-monitor.json":              "checks.custom-plugin.monitors",
	"iptables-mode-monitor.json":              "checks.custom-plugin.monitors",
	"network-problem-monitor.json":            "checks.custom-plugin.monitors",
	"docker-monitor-counter.json":             "NPD's log-counter",
	"kernel-monitor-counter.json":             "NPD's log-counter",
	"systemd-monitor-counter.json":            "NPD's log-counter",
	"health-checker-containerd.json":          "natively over CRI",
	"health-checker-docker.json":              "natively over CRI",
	"health-checker-kubelet.json":             "kubelet-health does this natively",
	"system-stats-monitor.json":               "node_exporter",
	"net-cgroup-system-stats-monitor.json":    "node_exporter",
	"windows-system-stats-monitor.json":       "node_exporter",
	"windows-containerd-monitor-filelog.json": "Windows-only",
	"windows-defender-monitor.json":           "Windows-only",
	"windows-health-checker-containerd.json":  "Windows-only",
	"windows-health-checker-docker.json":      "Windows-only",
	"windows-health-checker-kubelet.json":     "Windows-only",
	"windows-health-checker-kubeproxy.json":   "Windows-only",
	"exporter/stackdriver-exporter.json":      "exporter config",
	"guestosconfig/known-modules.json":        "a JSON list",
}

func TestNPDConfigFilesAsShipped(t *testing.T) {
	var found []string
	err := filepath.WalkDir("testdata/npd-config", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".json") {
			found = append(found, filepath.ToSlash(strings.TrimPrefix(p, "testdata/npd-config/")))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 28 || len(npdFiles) != 28 {
		t.Fatalf("%d files in testdata/npd-config, %d in the table; NPD ships 28", len(found), len(npdFiles))
	}
	for _, name := range found {
		want, ok := npdFiles[name]
		if !ok {
			t.Errorf("%s: not in the table", name)
			continue
		}
		_, err := LoadRuleFile(filepath.Join("testdata/npd-config", name))
		switch {
		case want == "" && err != nil:
			t.Errorf("%s: refused: %v", name, err)
		case want != "" && err == nil:
			t.Errorf("%s: accepted, want refused (%s)", name, want)
		case want != "" && !strings.Contains(err.Error(), "refused: ") || want != "" && !strings.Contains(err.Error(), want):
			t.Errorf("%s: %v; want a refusal saying %q", name, err, want)
		}
	}
}

// TestNPDAcceptedFilesFire feeds each accepted file a line of the log it
// names and expects its rule to fire, as it would in NPD.
func TestNPDAcceptedFilesFire(t *testing.T) {
	now := time.Date(2026, 12, 6, 14, 0, 0, 0, time.UTC)
	cases := []struct {
		file, line, reason string
		idents             []string
	}{
		{"kernel-monitor.json", "INFO: task kworker/0:1:42 blocked for more than 120 seconds.", "TaskHung", nil},
		{"readonly-monitor.json", "EXT4-fs (sda1): Remounting filesystem read-only", "FilesystemIsReadOnly", nil},
		{"systemd-monitor.json", "Started kubelet.service - kubelet: The Kubernetes Node Agent.", "KubeletStart", []string{"systemd"}},
		{"docker-monitor.json", "OCI runtime start failed: container process is already dead: unknown", "DockerContainerStartupFailure", []string{"dockerd"}},
		{"abrt-adaptor.json", "Process 4242 (python3) crashed in main()", "CCPPCrash", []string{"abrt-notification"}},
	}
	for _, c := range cases {
		set := loadTestRules(t, "npd-config/"+c.file)
		if !slices.Equal(set.Identifiers, c.idents) {
			t.Errorf("%s: journal identifiers %v, want %v", c.file, set.Identifiers, c.idents)
		}
		mo := NewMonitor(set, clocktesting.NewFakeClock(now), 0)
		mo.HandleLine(Line{Time: now, Text: []byte(c.line)})
		if got := reasons(mo.Findings(now)); !slices.Contains(got, c.reason) {
			t.Errorf("%s: %q gave %v, want %s", c.file, c.line, got, c.reason)
		}
	}

	// Files: through the file source, which parses NPD's pluginConfig.
	files := []struct {
		file, log, reason, prefix string
		at                        time.Time
	}{
		{"kernel-monitor-filelog.json", "Dec  6 13:59:01 node kernel: [ 99.000000] Out of memory: Killed process 7 (x) total-vm:1kB, anon-rss:1kB, file-rss:0kB\n",
			"OOMKilling", "log /var/log/kern.log: Out of memory", time.Date(2026, 12, 6, 13, 59, 1, 0, time.UTC)},
		// The timestamp and message are the regexps' last groups.
		{"docker-monitor-filelog.json", `time="2026-12-06T08:59:30.123456789-05:00" level=error msg="Error trying v2 registry: failed to register layer: rename /var/lib/docker/image/overlay2/a /var/lib/docker/image/overlay2/b: directory not empty"` + "\n",
			"CorruptDockerImage", "log /var/log/docker.log: ", time.Date(2026, 12, 6, 13, 59, 30, 123456789, time.UTC)},
	}
	for _, c := range files {
		set := loadTestRules(t, "npd-config/"+c.file)
		clk := clocktesting.NewFakeClock(now)
		mo := NewMonitor(set, clk, 0)
		root := fstest.MapFS{set.LogPath: {Data: []byte(c.log)}}
		src := &FileSource{FS: root, Path: set.LogPath, Clock: clk, Parse: set.Parse, SkipList: set.SkipList, Location: time.UTC}
		if err := src.Read(context.Background(), now.Add(-set.Lookback), false, mo); err != nil {
			t.Fatal(err)
		}
		got := slices.DeleteFunc(mo.Findings(now), func(f check.Finding) bool { return f.Severity == check.SeverityOK })
		if len(got) != 1 || got[0].Reason != c.reason || !got[0].Time.Equal(c.at) || !strings.HasPrefix(got[0].Message, c.prefix) {
			t.Errorf("%s: findings %+v, want %s at %s", c.file, got, c.reason, c.at)
		}
	}
}

// TestNPDDiskLogFile: its message regexp has no group, so NPD hands the
// rule only the matched words, never the sector count before them, and the
// rule never fires; node-doctor does the same. Its skipList still applies.
func TestNPDDiskLogFile(t *testing.T) {
	set := loadTestRules(t, "npd-config/disk-log-message-filelog.json")
	now := time.Date(2026, 12, 6, 14, 0, 0, 0, time.UTC)
	var got []string
	sink := funcSink{fn: func(l Line) { got = append(got, string(l.Text)) }}
	log := "Dec  6 13:00:00 node smartd[512]: Device: /dev/sda, 128 Currently unreadable (pending) sectors\n" +
		"Dec  6 13:00:01 node kernel: audit: type=1400 Currently unreadable sectors\n"
	clk := clocktesting.NewFakeClock(now)
	src := &FileSource{FS: fstest.MapFS{set.LogPath: {Data: []byte(log)}}, Path: set.LogPath, Clock: clk, Parse: set.Parse, SkipList: set.SkipList}
	if err := src.Read(context.Background(), now.Add(-set.Lookback), false, &sink); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []string{"Currently unreadable (pending) sectors"}) {
		t.Errorf("lines handed over: %q", got)
	}
	mo := NewMonitor(set, clk, 0)
	mo.HandleLine(Line{Time: now, Text: []byte(got[0])})
	if r := reasons(mo.Findings(now)); !slices.Equal(r, []string{"DiskBadBlock"}) || mo.Findings(now)[0].Severity != check.SeverityOK {
		t.Errorf("findings %v, want only the healthy DiskBadBlock condition", r)
	}
}

func writeRuleFile(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestNPDSkipListAndDelay: skipList drops lines containing any entry; delay
// ignores what was logged that long after boot, conditions included.
func TestNPDSkipListAndDelay(t *testing.T) {
	set, err := ParseRules("m.json", []byte(`{"plugin":"kmsg","logPath":"/dev/kmsg","lookback":"5m","bufferSize":1,"source":"m",
		"skipList":[" audit:"],"delay":"2m",
		"conditions":[{"type":"KernelDeadlock","reason":"KernelHasNoDeadlock","message":"ok"}],
		"rules":[{"type":"permanent","condition":"KernelDeadlock","reason":"DockerHung","pattern":"task dockerd:\\d+ blocked.*"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if set.Delay != 2*time.Minute || len(set.SkipList) != 1 {
		t.Fatalf("delay %s skipList %q", set.Delay, set.SkipList)
	}
	boot := time.Date(2026, 12, 6, 13, 0, 0, 0, time.UTC)
	now := boot.Add(time.Hour)
	mo := NewMonitor(set, clocktesting.NewFakeClock(now), 0)
	mo.SetIgnoreBefore(boot.Add(set.Delay))
	mo.HandleLine(Line{Time: boot.Add(time.Minute), Text: []byte("INFO: task dockerd:1 blocked for more than 120 seconds.")})
	mo.HandleLine(Line{Time: now, Text: []byte("kauditd: audit: INFO: task dockerd:2 blocked for more than 120 seconds.")})
	if r := reasons(mo.Findings(now)); !slices.Equal(r, []string{"KernelHasNoDeadlock"}) {
		t.Fatalf("a line within the delay or on the skipList counted: %v", r)
	}
	mo.HandleLine(Line{Time: now, Text: []byte("INFO: task dockerd:3 blocked for more than 120 seconds.")})
	if r := reasons(mo.Findings(now)); !slices.Equal(r, []string{"DockerHung"}) {
		t.Errorf("a line after the delay: %v", r)
	}

	for body, want := range map[string]string{
		`{"plugin":"kmsg","source":"m","skipList":[""],"rules":[]}`: "skipList[0]: an empty string would skip every line",
		`{"plugin":"kmsg","source":"m","delay":"soon","rules":[]}`:  `delay "soon": not a duration`,
	} {
		if _, err := ParseRules("m.json", []byte(body)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", body, err, want)
		}
	}
}

// TestLogCheckDelayFromBoot wires delay to the node's boot time.
func TestLogCheckDelayFromBoot(t *testing.T) {
	now := time.Date(2026, 12, 6, 14, 0, 0, 0, time.UTC)
	rules := writeRuleFile(t, "d.json", `{"plugin":"filelog","logPath":"/var/log/kern.log","lookback":"1h","source":"d","delay":"10m",
		"pluginConfig":{"timestamp":"^.{15}","message":"kernel: \\[[^\\]]*\\] (.*)","timestampFormat":"Jan _2 15:04:05"},
		"rules":[{"type":"temporary","reason":"OOMKilling","pattern":"Out of memory.*"}]}`)
	root := fstest.MapFS{
		"proc/uptime": {Data: []byte("900.00 1.00\n")}, // booted 13:45
		"var/log/kern.log": {Data: []byte("Dec  6 13:50:00 n kernel: [ 300.0] Out of memory: early\n" +
			"Dec  6 13:58:00 n kernel: [ 780.0] Out of memory: late\n")},
	}
	def := Log(root, clocktesting.NewFakeClock(now), nil)
	lc := def.Check.(*LogChecker)
	lc.settings.DefaultRules, lc.settings.RuleFiles = false, []string{rules}
	got, err := lc.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !strings.HasSuffix(got[0].Message, "Out of memory: late") {
		t.Errorf("findings %+v, want only the line after boot+10m", got)
	}
}

func TestHostLocation(t *testing.T) {
	tz, err := os.ReadFile("/usr/share/zoneinfo/Europe/Berlin")
	if err != nil {
		t.Skip("no zone data on this machine:", err)
	}
	// As on a node: an absolute symlink into the zoneinfo tree, which must
	// be followed under the host root.
	linked := fstest.MapFS{
		"etc/localtime":                    {Data: []byte("/usr/share/zoneinfo/Europe/Berlin"), Mode: fs.ModeSymlink},
		"usr/share/zoneinfo/Europe/Berlin": {Data: tz},
	}
	// As in the pod: the kubelet's hostPath mount resolves the link.
	copied := fstest.MapFS{"etc/localtime": {Data: tz}}
	winter := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	for name, fsys := range map[string]fs.FS{"symlink": linked, "file": copied} {
		loc := HostLocation(fsys)
		if _, off := winter.In(loc).Zone(); off != 3600 {
			t.Errorf("%s: offset %d, want 3600 (CET)", name, off)
		}
	}
	if loc := HostLocation(linked); loc.String() != "Europe/Berlin" {
		t.Errorf("zone name %q", loc)
	}
	if loc := HostLocation(fstest.MapFS{}); loc != time.Local {
		t.Errorf("no etc/localtime: %v, want the agent's own zone", loc)
	}

	// A syslog line in local time is read in the node's zone.
	set := loadTestRules(t, "npd-config/kernel-monitor-filelog.json")
	ts, _, ok := set.Parse([]byte("Dec  6 13:00:00 n kernel: [ 1.0] x"), winter.In(HostLocation(linked)))
	if !ok || !ts.Equal(time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)) {
		t.Errorf("parsed %s %v, want 12:00 UTC", ts, ok)
	}
}

// TestLogCheckAbsentLog: a rule file whose log is not on the node says so,
// one-shot and followed, and its rules apply once the log appears.
func TestLogCheckAbsentLog(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "var/log"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "proc"), 0o755); err != nil {
		t.Fatal(err)
	}
	appendFile(t, filepath.Join(root, "proc/uptime"), "100.0 1.0\n")
	present := filepath.Join(root, "var/log/kern.log")
	appendFile(t, present, "")
	rules := writeRuleFile(t, "p.yaml", `
plugin: filelog
logPath: /var/log/kern.log
source: present
rules: [{type: temporary, reason: Seen, pattern: 'marker'}]
`)
	docker := "testdata/npd-config/docker-monitor-filelog.json"
	def := Log(os.DirFS(root), clocktesting.NewFakeClock(time.Now()), nil)
	lc := def.Check.(*LogChecker)
	lc.settings.DefaultRules, lc.settings.RuleFiles = false, []string{rules, docker}
	absent := func(got []check.Finding) bool {
		for _, f := range got {
			if f.Reason == "LogAbsent" && f.Severity == check.SeverityOK && strings.Contains(f.Message, "docker-monitor: file var/log/docker.log is not on this node") {
				return true
			}
		}
		return false
	}
	got, err := lc.Run(context.Background())
	if err != nil || !absent(got) {
		t.Fatalf("one-shot: %v %+v, want LogAbsent for the docker log", err, got)
	}

	lc = Log(os.DirFS(root), clock.RealClock{}, nil).Check.(*LogChecker)
	lc.settings.DefaultRules, lc.settings.RuleFiles = false, []string{rules, docker}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := lc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err = lc.Run(ctx); err != nil || !absent(got) {
		t.Fatalf("started: %v %+v, want LogAbsent", err, got)
	}
	appendFile(t, filepath.Join(root, "var/log/docker.log"), "")
	deadline := time.Now().Add(10 * time.Second)
	for absent(got) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		if got, err = lc.Run(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if absent(got) {
		t.Errorf("still absent after the log appeared: %+v", got)
	}

	// Every log absent: not applicable, naming them.
	lc = Log(os.DirFS(t.TempDir()), clocktesting.NewFakeClock(time.Now()), nil).Check.(*LogChecker)
	lc.settings.DefaultRules, lc.settings.RuleFiles = false, []string{docker}
	_, err = lc.Run(context.Background())
	if _, ok := check.IsNotApplicable(err); !ok || !strings.Contains(err.Error(), "var/log/docker.log") {
		t.Errorf("no log at all: %v, want not applicable naming the file", err)
	}
}

func TestNPDDecodeErrors(t *testing.T) {
	for body, want := range map[string]string{
		"{\n  \"plugin\": \"kmsg\",\n  \"rules\": [\n    {\"type\": \"temporary\" \"reason\": \"X\"}\n  ]\n}": "line 4, column 27: JSON syntax error",
		"{\n  \"plugin\": \"kmsg\",\n  \"bufferSize\": \"ten\"\n}":                                            "line 3, column 22: bufferSize: want a whole number, got a JSON string",
		`{"plugin":"kmsg","sourec":"x"}`:                                                                      `unknown field "sourec": not a field of NPD's system-log-monitor config`,
	} {
		_, err := ParseRules("m.json", []byte(body))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", body, err, want)
		}
	}
}
