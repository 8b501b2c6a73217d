package kernel

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/node-doctor/node-doctor/pkg/check"
)

// oldAndNewKmsg is a kernel log, 10000 s after boot, with an OOM kill and a
// read-only remount an hour ago and an OOM kill a minute ago.
func oldAndNewKmsg() kmsgFS {
	fake := &fakeKmsg{items: []any{
		[]byte("3,10,6400000000,-;Out of memory: Killed process 1 (old) total-vm:1kB, anon-rss:1kB, file-rss:0kB\n"),
		[]byte("2,11,6400000001,-;EXT4-fs (sda1): Remounting filesystem read-only\n"),
		[]byte("3,12,9940000000,-;Memory cgroup out of memory: Killed process 2 (new) total-vm:1kB, anon-rss:1kB, file-rss:0kB\n"),
	}}
	return kmsgFS{MapFS: fstest.MapFS{"proc/uptime": {Data: []byte("10000.00 1.00\n")}}, fake: fake}
}

// summarize renders findings as "reason[ process time]|...".
func summarize(got []check.Finding) string {
	var parts []string
	for _, f := range got {
		s := f.Reason
		if f.Reason == "OOMKilling" {
			s += " " + f.Details["process"] + " " + f.Time.Format(time.RFC3339)
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "|")
}

// TestLogCheckOneShotReadsTheLookbackWindow: events come from the lookback
// window only; conditions from all the log there is, so a filesystem that
// went read-only an hour ago is still reported.
func TestLogCheckOneShotReadsTheLookbackWindow(t *testing.T) {
	now := time.Date(2026, 11, 23, 14, 0, 0, 0, time.UTC)
	def := Log(oldAndNewKmsg(), clocktesting.NewFakeClock(now), nil)
	got, err := def.Check.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := "OOMKilling new 2026-11-23T13:59:00Z|KernelHasNoDeadlock|FilesystemIsReadOnly|NoFrequentUnregisterNetDevice"
	if g := summarize(got); g != want {
		t.Errorf("findings = %s\nwant       %s", g, want)
	}
}

// TestLogCheckStartDoesNotFlipConditions: the first run after a start waits
// for the log to be read back, so it reports the condition the node had.
func TestLogCheckStartDoesNotFlipConditions(t *testing.T) {
	now := time.Date(2026, 11, 23, 14, 0, 0, 0, time.UTC)
	lc := Log(oldAndNewKmsg(), clocktesting.NewFakeClock(now), nil).Check.(*LogChecker)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := lc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := lc.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := "OOMKilling new 2026-11-23T13:59:00Z|KernelHasNoDeadlock|FilesystemIsReadOnly|NoFrequentUnregisterNetDevice"
	if g := summarize(got); g != want {
		t.Errorf("first run after start = %s\nwant                      %s", g, want)
	}
}

func TestLogCheckNotApplicableAndErrors(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Now())
	uptime := fstest.MapFS{"proc/uptime": {Data: []byte("100 1\n")}}
	def := Log(uptime, clk, nil)
	_, err := def.Check.Run(context.Background())
	if _, ok := check.IsNotApplicable(err); !ok {
		t.Errorf("without dev/kmsg: %v, want not applicable", err)
	}
	denied := errFS{MapFS: uptime, err: fs.ErrPermission}
	def = Log(denied, clk, nil)
	_, err = def.Check.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("unreadable dev/kmsg: %v, want a permission error", err)
	}
}

// errFS fails to open dev/kmsg.
type errFS struct {
	fstest.MapFS
	err error
}

func (e errFS) Open(name string) (fs.File, error) {
	if name == DefaultKmsgPath {
		return nil, &fs.PathError{Op: "open", Path: name, Err: e.err}
	}
	return e.MapFS.Open(name)
}

func TestSettingsValidateRejectsBadRuleFiles(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.json")
	if err := os.WriteFile(bad, []byte(`{"rules":[{"type":"permanent","condition":"Nope","reason":"X","pattern":"x+"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &Settings{DefaultRules: true, RuleFiles: []string{bad, "testdata/npd-kernel-monitor.json"}}
	err := s.Validate()
	if err == nil || !strings.Contains(err.Error(), "ruleFiles: rule file "+bad+": rules[0] (X)") {
		t.Errorf("Validate = %v", err)
	}
	s.RuleFiles = s.RuleFiles[1:]
	if err := s.Validate(); err != nil {
		t.Errorf("good files: %v", err)
	}
	s = &Settings{}
	if err := s.Validate(); err == nil {
		t.Error("no rules at all validated")
	}
}

// TestLogCheckStartedFollowsAFile runs the agent's way: started once, then
// each run reports what arrived since the previous one.
func TestLogCheckStartedFollowsAFile(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "var/log"), 0o755); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(root, "var/log/kern.log")
	rules := filepath.Join(t.TempDir(), "file.yaml")
	if err := os.WriteFile(rules, []byte(`
plugin: filelog
logPath: /var/log/kern.log
source: file-monitor
conditions: [{type: KernelDeadlock, reason: KernelHasNoDeadlock}]
rules:
- {type: temporary, reason: ConntrackTableFull, pattern: 'table full, dropping packet'}
- {type: permanent, condition: KernelDeadlock, reason: DockerHung, pattern: 'task dockerd:\d+ blocked'}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	appendFile(t, logPath, kernLine("nf_conntrack: table full, dropping packet"))

	def := Log(os.DirFS(root), clock.RealClock{}, nil)
	lc := def.Check.(*LogChecker)
	lc.settings.DefaultRules, lc.settings.RuleFiles = false, []string{rules}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := lc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor := func(want string) []check.Finding {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		var seen []string
		for time.Now().Before(deadline) {
			got, err := lc.Run(ctx)
			if err != nil {
				t.Fatal(err)
			}
			seen = seen[:0]
			for _, f := range got {
				seen = append(seen, f.Reason)
			}
			if strings.Join(seen, ",") == want {
				return got
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("findings %v never became %s", seen, want)
		return nil
	}
	waitFor("ConntrackTableFull,KernelHasNoDeadlock")
	waitFor("KernelHasNoDeadlock")
	appendFile(t, logPath, kernLine("INFO: task dockerd:77 blocked for more than 120 seconds."))
	got := waitFor("DockerHung")
	if got[0].Condition != check.ConditionKernelDeadlock || got[0].Severity != check.SeverityProblem {
		t.Errorf("deadlock finding = %+v", got[0])
	}
	if st := lc.Stats()["file-monitor"]; st.Lines != 2 || st.Matches != 2 {
		t.Errorf("stats = %+v", st)
	}
}

// TestPrivilegedLogCheckReportsRealKernelLines writes uniquely marked OOM
// lines into the real kernel log and expects the check to report them, both
// one-shot (reading back the lookback window) and started (following).
func TestPrivilegedLogCheckReportsRealKernelLines(t *testing.T) {
	requireKmsg(t)
	oom := "Out of memory: Killed process %d (node-doctor-t) total-vm:1000kB, anon-rss:900kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:40kB oom_score_adj:0"
	find := func(fs []check.Finding, marker string) *check.Finding {
		for i := range fs {
			if fs[i].Reason == "OOMKilling" && strings.Contains(fs[i].Details["log"], marker) {
				return &fs[i]
			}
		}
		return nil
	}

	marker := writeKmsg(t, 3, oom, 4001)
	written := time.Now()
	def := Log(os.DirFS("/"), clock.RealClock{}, nil)
	got, err := def.Check.Run(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	f := find(got, marker)
	if f == nil {
		t.Fatalf("one-shot run did not report the OOM line marked %s: %+v", marker, got)
	}
	if f.Details["pid"] != "4001" || f.Details["process"] != "node-doctor-t" || f.Time.Sub(written).Abs() > 5*time.Second {
		t.Errorf("finding = %+v (written at %s)", f, written)
	}

	// Started: the line already reported is in the window again after a
	// restart (that is what lookback is for); a new one arrives by following.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	lc := def.Check.(*LogChecker)
	if err := lc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	marker2 := writeKmsg(t, 3, oom, 4002)
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := lc.Run(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if f := find(got, marker2); f != nil {
			if f.Details["pid"] != "4002" {
				t.Errorf("finding = %+v", f)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("started check never reported the OOM line marked %s", marker2)
		}
		time.Sleep(50 * time.Millisecond)
	}
	st := lc.Stats()["kernel-monitor"]
	if st.Lines == 0 || st.MatchesByReason["OOMKilling"] == 0 {
		t.Errorf("stats = %+v", st)
	}
	t.Logf("stats after following the real /dev/kmsg: %+v", st)
}
