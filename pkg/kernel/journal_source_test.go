package kernel

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

// journalLine is what a journal source should hand over for an entry.
type journalLine struct {
	us  int64
	msg string
}

// goldenJournal reads journalctl -o json output and keeps the entries that
// pass keep, as the source should hand them over.
func goldenJournal(t *testing.T, b []byte, keep func(map[string]any) bool) []journalLine {
	t.Helper()
	var out []journalLine
	for line := range bytes.Lines(b) {
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("journalctl json: %v", err)
		}
		msg, _ := m["MESSAGE"].(string)
		if !keep(m) || strings.TrimSpace(msg) == "" {
			continue
		}
		us, _ := strconv.ParseInt(m["__REALTIME_TIMESTAMP"].(string), 10, 64)
		out = append(out, journalLine{us, strings.TrimSpace(msg)})
	}
	return out
}

func byIdentifier(ids ...string) func(map[string]any) bool {
	return func(m map[string]any) bool {
		id, _ := m["SYSLOG_IDENTIFIER"].(string)
		return slices.Contains(ids, id)
	}
}

func linesOf(c *collectSink) []journalLine {
	var out []journalLine
	for _, l := range c.lines {
		out = append(out, journalLine{l.Time.UnixMicro(), ""})
	}
	for i := range out {
		out[i].msg = c.texts[i]
	}
	return out
}

// journalRoot makes a host root holding the journal fixtures written by the
// real journald: one archived in var/log/journal, one in run/log/journal.
func journalRoot(t testing.TB) string {
	t.Helper()
	root := t.TempDir()
	const mid = "3d1219c7c4c5404aaa1f6d2a48adfda4" // the fixtures' machine ID
	for src, dst := range map[string]string{
		"compact-zstd.journal": "var/log/journal/" + mid + "/system@0001.journal",
		"regular-zstd.journal": "run/log/journal/" + mid + "/system.journal",
	} {
		b, err := os.ReadFile(filepath.Join("journal/testdata", src))
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(root, dst)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc/machine-id"), []byte(mid+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

func TestJournalSourceFixtures(t *testing.T) {
	root := journalRoot(t)
	var want []journalLine
	for _, f := range []string{"compact-zstd.json", "regular-zstd.json"} {
		b, err := os.ReadFile(filepath.Join("journal/testdata", f))
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, goldenJournal(t, b, byIdentifier("ndtest"))...)
	}
	slices.SortFunc(want, func(a, b journalLine) int { return int(a.us - b.us) })
	if len(want) != 6 {
		t.Fatalf("fixtures hold %d ndtest entries, want 6", len(want))
	}
	clk := clocktesting.NewFakeClock(time.UnixMicro(want[len(want)-1].us).Add(time.Minute))

	src := &JournalSource{FS: os.DirFS(root), Identifiers: []string{"ndtest"}, Clock: clk}
	var sink collectSink
	if err := src.Read(context.Background(), time.Time{}, false, &sink); err != nil {
		t.Fatal(err)
	}
	if got := linesOf(&sink); !slices.Equal(got, want) {
		t.Errorf("read\n%v\nwant\n%v", got, want)
	}
	if sink.badLines != 0 || sink.caughtUp != 1 {
		t.Errorf("parse errors %d, caught up %d", sink.badLines, sink.caughtUp)
	}

	// The lookback window: only entries at or after since.
	since := time.UnixMicro(want[3].us)
	sink = collectSink{}
	if err := src.Read(context.Background(), since, false, &sink); err != nil {
		t.Fatal(err)
	}
	if got := linesOf(&sink); !slices.Equal(got, want[3:]) {
		t.Errorf("since %s: read %v, want %v", since, got, want[3:])
	}

	// No filter: every entry with a message, journald's own too.
	src = &JournalSource{FS: os.DirFS(root), Dirs: []string{"var/log/journal"}, Clock: clk}
	sink = collectSink{}
	if err := src.Read(context.Background(), time.Time{}, false, &sink); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile("journal/testdata/compact-zstd.json")
	if all := goldenJournal(t, b, func(map[string]any) bool { return true }); !slices.Equal(linesOf(&sink), all) {
		t.Errorf("unfiltered: read %d lines, want %d", len(sink.lines), len(all))
	}
}

func TestJournalSourceMissing(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Now())
	src := &JournalSource{FS: os.DirFS(t.TempDir()), Clock: clk}
	var sink collectSink
	err := src.Read(context.Background(), time.Time{}, false, &sink)
	if err == nil || !strings.Contains(err.Error(), "no journal files") {
		t.Fatalf("err = %v", err)
	}
}

// A corrupt file is skipped with a parse error, the others still read.
func TestJournalSourceCorruptFile(t *testing.T) {
	root := journalRoot(t)
	p := filepath.Join(root, "run/log/journal/3d1219c7c4c5404aaa1f6d2a48adfda4/system.journal")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	// Break the first entry array's chain pointer.
	off := int(leUint64(b[176:]))
	copy(b[off+16:], []byte{1, 0, 0, 0, 0, 0, 0, 0})
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 23, 18, 0, 0, 0, time.UTC))
	src := &JournalSource{FS: os.DirFS(root), Identifiers: []string{"ndtest"}, Clock: clk}
	var sink collectSink
	if err := src.Read(context.Background(), time.Time{}, false, &sink); err != nil {
		t.Fatal(err)
	}
	if len(sink.lines) < 3 || sink.badLines == 0 {
		t.Errorf("lines %d, parse errors %d", len(sink.lines), sink.badLines)
	}
}

func leUint64(b []byte) uint64 {
	var v uint64
	for i := 7; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}

func TestLogCheckerJournalSource(t *testing.T) {
	set, err := ParseRules("k.json", []byte(`{"plugin":"journald","pluginConfig":{"source":"kubelet"},"logPath":"/var/log/journal",
		"rules":[{"type":"temporary","reason":"A","pattern":"aaa"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	c := &LogChecker{fs: os.DirFS(t.TempDir()), clk: clocktesting.NewFakeClock(time.Now())}
	src, ok := c.source(set, time.UTC).(*JournalSource)
	if !ok || !slices.Equal(src.Identifiers, []string{"kubelet"}) || !slices.Equal(src.Dirs, []string{"var/log/journal"}) {
		t.Fatalf("source = %#v", c.source(set, time.UTC))
	}
}

// An archived file is closed once read, and not read again when its
// directory is listed again.
func TestJournalSourceClosesArchivedFiles(t *testing.T) {
	root := journalRoot(t)
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 23, 18, 0, 0, 0, time.UTC))
	src := &JournalSource{FS: os.DirFS(root), Identifiers: []string{"ndtest"}, Clock: clk}
	r := newJournalReader(src, time.Time{})
	defer r.close()
	var sink collectSink
	for i := range 3 {
		if err := r.poll(context.Background(), &sink); err != nil {
			t.Fatal(err)
		}
		// A new file in the archived one's directory: listed again.
		dir := filepath.Join(root, "var/log/journal/3d1219c7c4c5404aaa1f6d2a48adfda4")
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("note%d", i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var done, open int
	for _, jf := range r.files {
		if jf.done {
			done++
		} else {
			open++
		}
	}
	// Both fixtures are archived files.
	if len(sink.lines) != 6 || done != 2 || open != 0 {
		t.Errorf("lines %d, closed files %d, open %d; want 6, 2, 0", len(sink.lines), done, open)
	}
}
