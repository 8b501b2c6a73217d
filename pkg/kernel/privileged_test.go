package kernel

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/utils/clock"

	"github.com/node-doctor/node-doctor/pkg/host"
)

// requireKmsg skips unless the test can read and write the real /dev/kmsg.
func requireKmsg(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to read and write /dev/kmsg; run as root (e.g. sudo go test -run TestPrivileged ./pkg/kernel)")
	}
	if _, err := os.Stat("/dev/kmsg"); err != nil {
		t.Skipf("no /dev/kmsg here: %v", err)
	}
}

// writeKmsg logs line into the kernel log with a unique marker in front and
// returns the marker.
func writeKmsg(t *testing.T, prio int, format string, args ...any) string {
	t.Helper()
	marker := fmt.Sprintf("node-doctor-test-%08x", rand.Uint32())
	f, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0)
	if err != nil {
		t.Fatalf("open /dev/kmsg for writing: %v", err)
	}
	defer f.Close()
	// Without the newline the kernel keeps the record open for a
	// continuation and readers do not see it until the next message.
	if _, err := fmt.Fprintf(f, "<%d>%s: %s\n", prio, marker, fmt.Sprintf(format, args...)); err != nil {
		t.Fatalf("write /dev/kmsg: %v", err)
	}
	return marker
}

func TestPrivilegedKmsgSourceReadsRealDevice(t *testing.T) {
	requireKmsg(t)
	src := &KmsgSource{FS: host.FS("/"), Path: DefaultKmsgPath, Clock: clock.RealClock{}}

	// One-shot: a line written just now is in the lookback window.
	marker := writeKmsg(t, 6, "hello from the one-shot test")
	var sink collectSink
	start := time.Now()
	if err := src.Read(t.Context(), time.Now().Add(-time.Minute), false, &sink); err != nil {
		t.Fatal(err)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("one-shot read took %s; it must stop when caught up", time.Since(start))
	}
	i := slices.IndexFunc(sink.texts, func(s string) bool { return strings.HasPrefix(s, marker+": hello") })
	if i < 0 {
		t.Fatalf("marker %s not read back; read %d lines, %d overruns, %d bad", marker, len(sink.texts), sink.overruns, sink.badLines)
	}
	if d := time.Since(sink.lines[i].Time); d < -2*time.Second || d > time.Minute {
		t.Errorf("line time %s is %s from now; boot time conversion is off", sink.lines[i].Time, d)
	}

	// Follow: a line written after the reader caught up arrives, and
	// cancelling stops the blocked read.
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	got := make(chan string, 1)
	follow := &funcSink{fn: func(l Line) {
		if strings.Contains(string(l.Text), "hello from the follow test") {
			select {
			case got <- string(l.Text):
			default:
			}
		}
	}}
	done := make(chan error, 1)
	go func() { done <- src.Read(ctx, time.Now(), true, follow) }()
	time.Sleep(200 * time.Millisecond)
	marker = writeKmsg(t, 6, "hello from the follow test")
	select {
	case s := <-got:
		if !strings.HasPrefix(s, marker) {
			t.Errorf("followed line %q lacks marker %s", s, marker)
		}
	case <-ctx.Done():
		t.Fatal("followed line never arrived")
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Read did not return after its context was cancelled")
	}
}

type funcSink struct{ fn func(Line) }

func (f *funcSink) HandleLine(l Line) { f.fn(l) }
func (f *funcSink) HandleOverrun()    {}
func (f *funcSink) HandleParseError() {}
func (f *funcSink) HandleCaughtUp()   {}
