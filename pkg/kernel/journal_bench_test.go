package kernel

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/node-doctor/node-doctor/pkg/kernel/journal/journaltest"
)

type discardSink struct{ lines, bad int }

func (d *discardSink) HandleLine(Line)   { d.lines++ }
func (d *discardSink) HandleOverrun()    {}
func (d *discardSink) HandleParseError() { d.bad++ }
func (d *discardSink) HandleCaughtUp()   {}

// BenchmarkJournalPollIdle is what following costs while nothing is
// written: two journal files read to the end once before, one archived
// (closed after that) and one marked online, as system.journal is, whose
// header is checked on every poll.
func BenchmarkJournalPollIdle(b *testing.B) {
	root := journalRoot(b)
	online := filepath.Join(root, "run/log/journal/3d1219c7c4c5404aaa1f6d2a48adfda4/system.journal")
	f, err := os.OpenFile(online, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{1}, 16); err != nil { // header state: online
		b.Fatal(err)
	}
	f.Close()
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 23, 18, 0, 0, 0, time.UTC))
	src := &JournalSource{FS: os.DirFS(root), Identifiers: []string{"ndtest"}, Clock: clk}
	r := newJournalReader(src, time.Time{})
	defer r.close()
	var sink discardSink
	if err := r.poll(context.Background(), &sink); err != nil || sink.lines != 6 {
		b.Fatalf("first poll: %v, %d lines", err, sink.lines)
	}
	b.ReportAllocs()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpu0 := threadCPU(b)
	for b.Loop() {
		if err := r.poll(context.Background(), &sink); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64((threadCPU(b)-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
	if sink.lines != 6 {
		b.Fatalf("idle polls handed over %d more lines", sink.lines-6)
	}
}

// BenchmarkPrivilegedJournalRead reads back a journal of 20,000 entries
// written by the real journald (root): all of them, and with an identifier
// filter that 1 in 100 entries passes.
func BenchmarkPrivilegedJournalRead(b *testing.B) {
	j := journaltest.Start(b, journaltest.Options{Compact: true, MaxFileSize: "64M"})
	const n = 20000
	for i := range n {
		id, msg := "kubelet", fmt.Sprintf(`I1123 17:%02d:%02d.%06d 1234 kubelet.go:%d] "SyncLoop (PLEG): event for pod" pod="ns-%d/pod-%d" event={"ID":"%08x","Type":"ContainerStarted"}`, i/3600%60, i/60%60, i, 1000+i%2000, i%50, i, i*7919)
		if i%100 == 0 {
			id = "containerd"
		}
		if err := j.Send(journaltest.Field{Name: "MESSAGE", Value: msg}, journaltest.Field{Name: "SYSLOG_IDENTIFIER", Value: id}); err != nil {
			b.Fatal(err)
		}
	}
	if err := j.Sync(context.Background()); err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		idents []string
		want   int
	}{
		{"all", nil, n},
		{"filtered", []string{"containerd"}, n / 100},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			cpu0 := threadCPU(b)
			for b.Loop() {
				src := &JournalSource{FS: os.DirFS("/"), Dirs: []string{"run/log/journal"}, Namespace: j.Namespace,
					Identifiers: tc.idents, Clock: clock.RealClock{}}
				var sink discardSink
				if err := src.Read(context.Background(), time.Now().Add(-time.Hour), false, &sink); err != nil {
					b.Fatal(err)
				}
				// journald's own entries come on top of the unfiltered ones.
				if sink.lines < tc.want || sink.lines > tc.want+10 || sink.bad != 0 {
					b.Fatalf("read %d lines (%d bad), want %d", sink.lines, sink.bad, tc.want)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/entry")
			b.ReportMetric(float64((threadCPU(b)-cpu0).Nanoseconds())/float64(b.N*n), "cpu-ns/entry")
		})
	}
}
