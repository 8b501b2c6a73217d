package kernel

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/utils/clock"
)

// chanSink forwards lines to a channel, for sources read in the background.
type chanSink struct{ ch chan string }

func (c chanSink) HandleLine(l Line) { c.ch <- string(l.Text) }
func (chanSink) HandleOverrun()      {}
func (chanSink) HandleParseError()   {}
func (chanSink) HandleCaughtUp()     {}

// kernLine formats msg as rsyslog writes a kernel line.
func kernLine(msg string) string {
	return time.Now().UTC().Format("2006-01-02T15:04:05.000000Z07:00") + " node-1 kernel: " + msg + "\n"
}

func appendFile(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

// expect waits for the next lines from ch.
func expect(t *testing.T, ch chan string, want ...string) {
	t.Helper()
	for _, w := range want {
		select {
		case got := <-ch:
			if got != w {
				t.Fatalf("got line %q, want %q", got, w)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("timed out waiting for line %q", w)
		}
	}
}

func expectNothing(t *testing.T, ch chan string) {
	t.Helper()
	select {
	case got := <-ch:
		t.Fatalf("unexpected line %q", got)
	case <-time.After(100 * time.Millisecond):
	}
}

func followFile(t *testing.T, dir string) chan string {
	t.Helper()
	src := &FileSource{FS: os.DirFS(dir), Path: "var/log/kern.log", Clock: clock.RealClock{}, PollInterval: 10 * time.Millisecond}
	ch := make(chan string, 100)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Read(ctx, time.Time{}, true, chanSink{ch}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != context.Canceled {
			t.Errorf("Read returned %v, want context.Canceled", err)
		}
	})
	return ch
}

func TestFileSourceRotationTruncationAndPartialLines(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "var/log"), 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "var/log/kern.log")
	appendFile(t, path, kernLine("one")+"Nov 23 14:20:02 node-1 systemd[1]: not kernel\n")
	ch := followFile(t, dir)
	expect(t, ch, "one")

	// A partial line waits for its newline.
	appendFile(t, path, strings.TrimSuffix(kernLine("two"), "\n")[:40])
	expectNothing(t, ch)
	appendFile(t, path, strings.TrimSuffix(kernLine("two"), "\n")[40:]+"\n")
	expect(t, ch, "two")

	// Rotation: lines written to the old file after the rename are still
	// read, then the new file from its start.
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	appendFile(t, path+".1", kernLine("three, late in the old file"))
	appendFile(t, path, kernLine("four, in the new file"))
	expect(t, ch, "three, late in the old file", "four, in the new file")

	// Truncation in place (copytruncate).
	time.Sleep(50 * time.Millisecond)
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	appendFile(t, path, kernLine("five, after truncation"))
	expect(t, ch, "five, after truncation")

	// Removed and recreated later.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	appendFile(t, path, kernLine("six, in a recreated file"))
	expect(t, ch, "six, in a recreated file")
	expectNothing(t, ch)
}

func TestFileSourceOneShotLookbackAndTail(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "var/log"), 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "var/log/kern.log")
	old := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339) + " node-1 kernel: an hour ago\n"
	var b strings.Builder
	b.WriteString(old)
	for i := range 100 {
		b.WriteString(kernLine(fmt.Sprintf("recent %d", i)))
	}
	b.WriteString(strings.TrimSuffix(kernLine("unfinished"), "\n"))
	appendFile(t, path, b.String())

	src := &FileSource{FS: os.DirFS(dir), Path: "var/log/kern.log", Clock: clock.RealClock{}}
	var sink collectSink
	if err := src.Read(context.Background(), time.Now().Add(-5*time.Minute), false, &sink); err != nil {
		t.Fatal(err)
	}
	if len(sink.texts) != 100 || sink.texts[0] != "recent 0" || sink.texts[99] != "recent 99" {
		t.Errorf("read %d lines %q..., want the 100 recent complete ones", len(sink.texts), sink.texts[:min(3, len(sink.texts))])
	}

	// Only the last MaxLookbackBytes are read, from the first whole line.
	src.MaxLookbackBytes = int64(len(kernLine("recent 99"))*4 + 9) // the unfinished line and 3 more
	sink = collectSink{}
	if err := src.Read(context.Background(), time.Time{}, false, &sink); err != nil {
		t.Fatal(err)
	}
	if want := []string{"recent 97", "recent 98", "recent 99"}; !equalStrings(sink.texts, want) {
		t.Errorf("with a byte limit read %q, want %q", sink.texts, want)
	}

	src.Path = "var/log/missing.log"
	if err := src.Read(context.Background(), time.Time{}, false, &sink); err == nil {
		t.Error("want an error for a missing file")
	}
}
