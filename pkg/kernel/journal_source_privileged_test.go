package kernel

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/utils/clock"

	"github.com/node-doctor/node-doctor/pkg/check"
	"github.com/node-doctor/node-doctor/pkg/host"
	"github.com/node-doctor/node-doctor/pkg/kernel/journal/journaltest"
)

// lockedSink collects lines handed over by a source in another goroutine.
type lockedSink struct {
	mu       sync.Mutex
	lines    []journalLine
	bad      int
	caughtUp int
}

func (s *lockedSink) HandleLine(l Line) {
	s.mu.Lock()
	s.lines = append(s.lines, journalLine{l.Time.UnixMicro(), string(l.Text)})
	s.mu.Unlock()
}
func (s *lockedSink) HandleOverrun() {}
func (s *lockedSink) HandleParseError() {
	s.mu.Lock()
	s.bad++
	s.mu.Unlock()
}
func (s *lockedSink) HandleCaughtUp() {
	s.mu.Lock()
	s.caughtUp++
	s.mu.Unlock()
}

func (s *lockedSink) snapshot() ([]journalLine, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.lines), s.bad
}

// waitLines waits until the sink holds n lines.
func (s *lockedSink) waitLines(t *testing.T, n int) []journalLine {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		got, _ := s.snapshot()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("have %d lines, waited for %d: %v", len(got), n, got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPrivilegedJournalSourceFollows runs a real journald (root) and
// follows its journal while it is written, rotated and vacuumed; what the
// source hands over must equal what journalctl shows, in order, once.
func TestPrivilegedJournalSourceFollows(t *testing.T) {
	j := journaltest.Start(t, journaltest.Options{Compact: true})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ident := fmt.Sprintf("ndident%08x", rand.Uint32())
	unit := fmt.Sprintf("ndunit%08x.service", rand.Uint32())
	send := func(id, unitField, msg string) {
		t.Helper()
		fields := []journaltest.Field{{Name: "MESSAGE", Value: msg}, {Name: "SYSLOG_IDENTIFIER", Value: id}}
		if unitField != "" {
			fields = append(fields, journaltest.Field{Name: "UNIT", Value: unitField})
		}
		if err := j.Send(fields...); err != nil {
			t.Fatal(err)
		}
	}
	sync := func() {
		t.Helper()
		if err := j.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Before the source starts: outside its window.
	send(ident, "", "too old")
	sync()
	time.Sleep(10 * time.Millisecond)
	since := time.Now()

	src := &JournalSource{FS: os.DirFS("/"), Dirs: []string{"run/log/journal"}, Namespace: j.Namespace,
		Identifiers: []string{ident}, Units: []string{unit}, Clock: clock.RealClock{}, PollInterval: 20 * time.Millisecond}
	sink := &lockedSink{}
	done := make(chan error, 1)
	readCtx, stop := context.WithCancel(ctx)
	go func() { done <- src.Read(readCtx, since, true, sink) }()

	send(ident, "", "one "+ident)
	send("someone-else", "", "filtered out "+ident)
	send("systemd", unit, "Started "+unit) // systemd's line about the unit
	big := fmt.Sprintf("big %s %0900d", ident, 7)
	send(ident, "", big) // compressed by journald
	sync()
	sink.waitLines(t, 3)

	if err := j.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	send(ident, "", "after rotation "+ident)
	sync()
	sink.waitLines(t, 4)

	// Rotate again, then vacuum the archived files away.
	if err := j.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	send(ident, "", "second rotation "+ident)
	sync()
	sink.waitLines(t, 5)
	files, _ := filepath.Glob(filepath.Join(j.Dir, "system@*.journal"))
	if len(files) < 2 {
		t.Fatalf("archived files %v, want 2", files)
	}
	if _, err := j.Journalctl(ctx, "--vacuum-files=1"); err != nil {
		t.Fatal(err)
	}
	after, _ := filepath.Glob(filepath.Join(j.Dir, "system@*.journal"))
	if len(after) >= len(files) {
		t.Fatalf("vacuum removed nothing: %v", after)
	}
	send(ident, "", "after vacuum "+ident)
	sync()
	sink.waitLines(t, 6)
	time.Sleep(100 * time.Millisecond) // a few more polls: nothing twice
	got, bad := sink.snapshot()
	stop()
	if err := <-done; err != context.Canceled {
		t.Errorf("Read ended with %v", err)
	}

	// journalctl over what is left (the vacuumed file's lines are gone from
	// its view), plus what was seen before the vacuum.
	out, err := j.Journalctl(ctx, "-o", "json", "--all")
	if err != nil {
		t.Fatal(err)
	}
	keep := func(m map[string]any) bool {
		id, _ := m["SYSLOG_IDENTIFIER"].(string)
		u, _ := m["UNIT"].(string)
		return id == ident || u == unit
	}
	want := goldenJournal(t, out, keep)
	var gotLeft []journalLine
	for _, l := range got {
		if slices.Contains(want, l) {
			gotLeft = append(gotLeft, l)
		}
	}
	if !slices.Equal(gotLeft, want[len(want)-len(gotLeft):]) || len(gotLeft) < 2 {
		t.Errorf("read %v\njournalctl has %v", got, want)
	}
	msgs := make([]string, len(got))
	for i, l := range got {
		msgs[i] = l.msg
	}
	wantMsgs := []string{"one " + ident, "Started " + unit, big, "after rotation " + ident, "second rotation " + ident, "after vacuum " + ident}
	if !slices.Equal(msgs, wantMsgs) {
		t.Errorf("messages\n%q\nwant\n%q", msgs, wantMsgs)
	}
	if bad != 0 {
		t.Errorf("%d parse errors", bad)
	}
}

// TestPrivilegedJournaldNPDRuleFile loads an NPD journald rule file as is
// and runs it on a real journald's entries: the kubelet's lines match, a
// permanent condition is set, another identifier's same line does not.
func TestPrivilegedJournaldNPDRuleFile(t *testing.T) {
	j := journaltest.Start(t, journaltest.Options{Compact: true})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	set, err := LoadRuleFile("testdata/npd-kubelet-journald.json")
	if err != nil {
		t.Fatal(err)
	}
	if set.Plugin != PluginJournald || !slices.Equal(set.Identifiers, []string{"kubelet"}) {
		t.Fatalf("plugin %s identifiers %v", set.Plugin, set.Identifiers)
	}
	start := time.Now()
	for _, e := range [][2]string{
		{"containerd", "PLEG is not healthy: pleg was last seen active 3m0s ago; threshold is 3m0s"},
		{"kubelet", "I1123 17:00:00.000000 1234 kubelet.go:2380] \"Skipping pod synchronization\" err=\"PLEG is not healthy: pleg was last seen active 3m0s ago; threshold is 3m0s\""},
		{"kubelet", "E1123 17:00:01.000000 1234 kubelet.go:2900] \"Container runtime network not ready\" networkReady=\"NetworkReady=false reason:NetworkPluginNotReady message:cni plugin not initialized\""},
	} {
		if err := j.Send(journaltest.Field{Name: "MESSAGE", Value: e[1]}, journaltest.Field{Name: "SYSLOG_IDENTIFIER", Value: e[0]}); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	clk := clock.RealClock{}
	mon := NewMonitor(set, clk, 0)
	mon.SetEventWindow(start.Add(-set.Lookback))
	src := &JournalSource{FS: os.DirFS("/"), Dirs: []string{"run/log/journal"}, Namespace: j.Namespace,
		Identifiers: set.Identifiers, Units: set.Units, Clock: clk}
	if err := src.Read(ctx, start.Add(-set.Lookback), false, mon); err != nil {
		t.Fatal(err)
	}
	got := mon.Findings(clk.Now())
	var pleg, cond int
	for _, f := range got {
		switch {
		case f.Reason == "PLEGNotHealthy" && f.Condition == "":
			pleg++
		case f.Condition == "KubeletUnhealthy" && f.Severity == check.SeverityProblem && f.Reason == "ContainerRuntimeNetworkNotReady":
			cond++
			if !strings.HasPrefix(f.Message, "journal: ") || !strings.Contains(f.Message, "Container runtime network not ready") {
				t.Errorf("message %q", f.Message)
			}
		}
	}
	if pleg != 1 || cond != 1 {
		t.Errorf("want one PLEGNotHealthy event and KubeletUnhealthy set; findings %+v", got)
	}
	if st := mon.Stats(); st.Lines != 2 || st.ParseErrors != 0 {
		t.Errorf("stats %+v: want the 2 kubelet lines read", st)
	}
}

// TestPrivilegedJournaldCheck runs the kernel-log check itself, one-shot and
// started, on a real journald through an NPD rule file whose logPath names
// the journal's directory: the condition is reported, then an appended line
// gives an event while following.
func TestPrivilegedJournaldCheck(t *testing.T) {
	j := journaltest.Start(t, journaltest.Options{Compact: true})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rules, err := os.ReadFile("testdata/npd-kubelet-journald.json")
	if err != nil {
		t.Fatal(err)
	}
	rules = bytes.Replace(rules, []byte(`"logPath": "/var/log/journal"`), []byte(`"logPath": "`+j.Dir+`"`), 1)
	file := filepath.Join(t.TempDir(), "kubelet.json")
	if err := os.WriteFile(file, rules, 0o644); err != nil {
		t.Fatal(err)
	}
	send := func(msg string) {
		t.Helper()
		if err := j.Send(journaltest.Field{Name: "MESSAGE", Value: msg}, journaltest.Field{Name: "SYSLOG_IDENTIFIER", Value: "kubelet"}); err != nil {
			t.Fatal(err)
		}
		if err := j.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	send(`E1123 17:00:01.000000 1234 kubelet.go:2900] "Container runtime network not ready" networkReady="NetworkReady=false"`)

	newCheck := func() *LogChecker {
		def := Log(host.FS("/"), clock.RealClock{}, nil)
		c := def.Check.(*LogChecker)
		c.settings.DefaultRules, c.settings.RuleFiles = false, []string{file}
		if err := c.settings.Validate(); err != nil {
			t.Fatal(err)
		}
		return c
	}
	hasCond := func(fs []check.Finding) bool {
		return slices.ContainsFunc(fs, func(f check.Finding) bool {
			return f.Condition == "KubeletUnhealthy" && f.Severity == check.SeverityProblem
		})
	}
	got, err := newCheck().Run(ctx)
	if err != nil || !hasCond(got) {
		t.Fatalf("one-shot: %v, findings %+v", err, got)
	}

	c := newCheck()
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	if err := c.Start(runCtx); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Run(ctx); err != nil || !hasCond(got) {
		t.Fatalf("started, first run: %v, findings %+v", err, got)
	}
	send(`I1123 17:00:02.000000 1234 kubelet.go:2380] "Skipping pod synchronization" err="PLEG is not healthy: pleg was last seen active 3m0s ago; threshold is 3m0s"`)
	deadline := time.Now().Add(15 * time.Second)
	for {
		got, err := c.Run(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(got, func(f check.Finding) bool { return f.Reason == "PLEGNotHealthy" }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("followed PLEG line never reported; last findings %+v", got)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if st := c.Stats()["kubelet-monitor"]; st.Lines != 2 || st.ParseErrors != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestPrivilegedJournalSourceMergesUserFiles has the real journald split
// entries into system.journal and user-1000.journal (persistent storage);
// the source hands them over merged in time order, as journalctl shows.
func TestPrivilegedJournalSourceMergesUserFiles(t *testing.T) {
	journaltest.Skip(t)
	for _, tool := range []string{"setpriv", "logger"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s here to log as another user: %v", tool, err)
		}
	}
	j := journaltest.Start(t, journaltest.Options{Compact: true, Persistent: true})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ident := fmt.Sprintf("ndident%08x", rand.Uint32())
	start := time.Now()
	var want []string
	for i := range 6 {
		uid := 0
		if i%2 == 1 {
			uid = 1000
		}
		msg := fmt.Sprintf("line %d from uid %d", i, uid)
		if err := j.LogAs(ctx, uid, ident, msg); err != nil {
			t.Fatal(err)
		}
		want = append(want, msg)
	}
	if err := j.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(j.Dir, "user-1000.journal")); err != nil {
		t.Fatalf("journald did not split the user's entries: %v", err)
	}
	src := &JournalSource{FS: os.DirFS("/"), Dirs: []string{"var/log/journal"}, Namespace: j.Namespace,
		Identifiers: []string{ident}, Clock: clock.RealClock{}}
	var sink collectSink
	if err := src.Read(ctx, start, false, &sink); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(sink.texts, want) {
		t.Errorf("read %q\nwant %q", sink.texts, want)
	}
	out, err := j.Journalctl(ctx, "-o", "json", "--all")
	if err != nil {
		t.Fatal(err)
	}
	if oracle := goldenJournal(t, out, byIdentifier(ident)); !slices.Equal(linesOf(&sink), oracle) {
		t.Errorf("read %v\njournalctl %v", linesOf(&sink), oracle)
	}
}
