package kernel

import (
	"context"
	"io"
	"io/fs"
	"syscall"
	"testing"
	"testing/fstest"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

// fakeKmsg is a /dev/kmsg stand-in: each Read returns one queued record or
// error, then io.EOF.
type fakeKmsg struct {
	items []any // []byte or error
}

func (f *fakeKmsg) Stat() (fs.FileInfo, error) { return nil, fs.ErrInvalid }
func (f *fakeKmsg) Close() error               { return nil }
func (f *fakeKmsg) Read(b []byte) (int, error) {
	if len(f.items) == 0 {
		return 0, io.EOF
	}
	it := f.items[0]
	f.items = f.items[1:]
	if err, ok := it.(error); ok {
		return 0, err
	}
	return copy(b, it.([]byte)), nil
}

// kmsgFS serves proc/uptime from a MapFS and dev/kmsg from fake.
type kmsgFS struct {
	fstest.MapFS
	fake *fakeKmsg
}

func (k kmsgFS) Open(name string) (fs.File, error) {
	if name == "dev/kmsg" {
		return k.fake, nil
	}
	return k.MapFS.Open(name)
}

type collectSink struct {
	lines              []Line
	texts              []string
	overruns, badLines int
	caughtUp           int
}

func (c *collectSink) HandleLine(l Line) {
	c.lines = append(c.lines, l)
	c.texts = append(c.texts, string(l.Text))
}
func (c *collectSink) HandleOverrun()    { c.overruns++ }
func (c *collectSink) HandleParseError() { c.badLines++ }
func (c *collectSink) HandleCaughtUp()   { c.caughtUp++ }

func TestKmsgSourceLookbackOverrunAndBadRecords(t *testing.T) {
	now := time.Date(2026, 11, 23, 14, 0, 0, 0, time.UTC)
	clk := clocktesting.NewFakeClock(now)
	fake := &fakeKmsg{items: []any{
		[]byte("6,1,1000000,-;booted\n"),         // 1 s after boot: outside the window
		[]byte("6,2,9000000000,-;old problem\n"), // uptime 9000 s
		syscall.EPIPE,
		[]byte("garbage\n"),
		[]byte("3,7,9950000000,-;recent problem\n SUBSYSTEM=x\n"), // 50 s ago
		[]byte("3,8,9999500000,-;just now\n"),
	}}
	fsys := kmsgFS{MapFS: fstest.MapFS{"proc/uptime": {Data: []byte("10000.00 1234.00\n")}}, fake: fake}
	src := &KmsgSource{FS: fsys, Path: DefaultKmsgPath, Clock: clk}
	var sink collectSink
	if err := src.Read(context.Background(), now.Add(-5*time.Minute), false, &sink); err != nil {
		t.Fatal(err)
	}
	if want := []string{"recent problem", "just now"}; !equalStrings(sink.texts, want) {
		t.Errorf("lines = %q, want %q", sink.texts, want)
	}
	if sink.overruns != 1 || sink.badLines != 1 {
		t.Errorf("overruns = %d, parse errors = %d; want 1 and 1", sink.overruns, sink.badLines)
	}
	if got, want := sink.lines[0].Time, now.Add(-50*time.Second); !got.Equal(want) {
		t.Errorf("time of first line = %s, want %s", got, want)
	}
}

func TestKmsgSourceMissing(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Now())
	src := &KmsgSource{FS: fstest.MapFS{"proc/uptime": {Data: []byte("1 1\n")}}, Path: DefaultKmsgPath, Clock: clk}
	err := src.Read(context.Background(), time.Time{}, false, &collectSink{})
	if err == nil {
		t.Fatal("want an error for a missing dev/kmsg")
	}
}

func TestBootTime(t *testing.T) {
	now := time.Date(2026, 11, 23, 14, 0, 0, 0, time.UTC)
	clk := clocktesting.NewFakeClock(now)
	got, err := BootTime(fstest.MapFS{"proc/uptime": {Data: []byte("788.95 511.68\n")}}, clk)
	if err != nil || !got.Equal(now.Add(-78895*time.Second/100)) {
		t.Errorf("from uptime: %s, %v", got, err)
	}
	got, err = BootTime(fstest.MapFS{"proc/stat": {Data: []byte("cpu 1 2 3\nbtime 1795443178\nprocesses 5\n")}}, clk)
	if err != nil || got.Unix() != 1795443178 {
		t.Errorf("from btime: %s, %v", got, err)
	}
	if _, err := BootTime(fstest.MapFS{"proc/stat": {Data: []byte("cpu 1\n")}}, clk); err == nil {
		t.Error("want an error without uptime or btime")
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
