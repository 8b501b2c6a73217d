package kernel

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

// benchLines is how many lines the replay benchmarks go through per op.
const benchLines = 1_000_000

// corpus is a block of log lines stored back to back, to keep a million of
// them from being a million allocations.
type corpus struct {
	buf  []byte
	ends []int
}

func (c *corpus) add(s string) {
	c.buf = append(c.buf, s...)
	c.ends = append(c.ends, len(c.buf))
}

func (c *corpus) line(i int) []byte {
	start := 0
	if i > 0 {
		start = c.ends[i-1]
	}
	return c.buf[start:c.ends[i]]
}

// noiseTemplates are what a busy Kubernetes node's kernel log is mostly
// made of, besides the real boot and churn log in testdata.
var noiseTemplates = []func(r *rand.Rand) string{
	func(r *rand.Rand) string {
		return fmt.Sprintf("cni0: port %d(veth%08x) entered blocking state", r.IntN(250), r.Uint32())
	},
	func(r *rand.Rand) string { return fmt.Sprintf("veth%08x: entered promiscuous mode", r.Uint32()) },
	func(r *rand.Rand) string {
		return fmt.Sprintf("IPv6: ADDRCONF(NETDEV_CHANGE): veth%08x: link becomes ready", r.Uint32())
	},
	func(r *rand.Rand) string { return fmt.Sprintf("eth0: renamed from tmp%d", r.IntN(1<<20)) },
	func(r *rand.Rand) string {
		return fmt.Sprintf(`audit: type=1400 audit(%d.%03d:%d): apparmor="DENIED" operation="open" profile="cri-containerd.apparmor.d" name="/proc/%d/attr/current" pid=%d comm="runc" requested_mask="r" denied_mask="r" fsuid=0 ouid=0`,
			1795443000+r.IntN(9999), r.IntN(1000), r.IntN(1<<16), r.IntN(1<<22), r.IntN(1<<22))
	},
	func(r *rand.Rand) string {
		return fmt.Sprintf("[UFW BLOCK] IN=eth0 OUT= MAC=0a:58:0a:f4:00:01:0a:58:0a:f4:00:%02x:08:00 SRC=10.244.%d.%d DST=10.96.0.%d LEN=60 TOS=0x00 PREC=0x00 TTL=64 ID=%d DF PROTO=TCP SPT=%d DPT=443 WINDOW=64240 RES=0x00 SYN URGP=0",
			r.IntN(256), r.IntN(256), r.IntN(256), r.IntN(256), r.IntN(65536), 32768+r.IntN(28000))
	},
	func(r *rand.Rand) string {
		return fmt.Sprintf("kauditd_printk_skb: %d callbacks suppressed", r.IntN(100))
	},
	func(r *rand.Rand) string {
		return "overlayfs: upperdir is in-use as upperdir/workdir of another mount, accessing files from both mounts will result in undefined behavior."
	},
	func(r *rand.Rand) string {
		return fmt.Sprintf("IPVS: rr: TCP 10.96.%d.%d:443 - no destination available", r.IntN(256), r.IntN(256))
	},
	func(r *rand.Rand) string {
		return fmt.Sprintf("EXT4-fs (nvme%dn1p1): mounted filesystem %08x-0000-0000-0000-000000000000 r/w with ordered data mode. Quota mode: none.", r.IntN(4), r.Uint32())
	},
}

// matchingLines are problems, for the mixed and flood benchmarks.
var matchingLines = []string{
	"nf_conntrack: nf_conntrack: table full, dropping packet",
	"Memory cgroup out of memory: Killed process 41234 (stress) total-vm:1052620kB, anon-rss:1048640kB, file-rss:896kB, shmem-rss:0kB, UID:0 pgtables:2100kB oom_score_adj:984",
	"TCP: request_sock_TCP: Possible SYN flooding on port 8080. Sending cookies.  Check SNMP counters.",
	"neighbour: arp_cache: neighbor table overflow!",
	"I/O error, dev nvme1n1, sector 2048 op 0x1:(WRITE) flags 0x800 phys_seg 1 prio class 2",
}

// genCorpus makes n lines: half from a real node's log, half from the
// templates, and one in matchEvery (if > 0) a problem line.
func genCorpus(t testing.TB, n, matchEvery int) *corpus {
	real := readLines(t, "testdata/dmesg-noise.txt")
	r := rand.New(rand.NewPCG(42, 6))
	c := &corpus{buf: make([]byte, 0, n*90), ends: make([]int, 0, n)}
	for i := range n {
		switch {
		case matchEvery > 0 && i%matchEvery == matchEvery-1:
			c.add(matchingLines[r.IntN(len(matchingLines))])
		case i%2 == 0:
			c.add(real[r.IntN(len(real))])
		default:
			c.add(noiseTemplates[r.IntN(len(noiseTemplates))](r))
		}
	}
	return c
}

func benchReplay(b *testing.B, c *corpus) {
	set := mustDefaults(b)
	clk := clocktesting.NewFakeClock(time.Now())
	mo := NewMonitor(set, clk, 0)
	now := clk.Now()
	n := len(c.ends)
	b.SetBytes(int64(len(c.buf)))
	b.ReportAllocs()
	// On a shared machine wall time includes time spent descheduled; the
	// thread's own CPU time does not.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpu0 := threadCPU(b)
	for b.Loop() {
		for i := range n {
			mo.HandleLine(Line{Time: now, Text: c.line(i)})
		}
		mo.Findings(now) // as the check does between runs
	}
	cpu := threadCPU(b) - cpu0
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/line")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N*n), "cpu-ns/line")
}

// threadCPU is the calling thread's CPU time (user and system).
func threadCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(1 /* RUSAGE_THREAD */, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkReplayNonMatching is the common case: a million lines of a busy
// node's kernel log, none of them a problem, through the default rules.
func BenchmarkReplayNonMatching(b *testing.B) {
	benchReplay(b, genCorpus(b, benchLines, 0))
}

// BenchmarkReplayMixed has one problem line in a thousand.
func BenchmarkReplayMixed(b *testing.B) {
	benchReplay(b, genCorpus(b, benchLines, 1000))
}

// BenchmarkReplayFlood is every line a problem.
func BenchmarkReplayFlood(b *testing.B) {
	benchReplay(b, genCorpus(b, benchLines/10, 1))
}

// BenchmarkKmsgParseAndMatch adds record parsing: raw /dev/kmsg records.
func BenchmarkKmsgParseAndMatch(b *testing.B) {
	c := genCorpus(b, benchLines, 0)
	recs := &corpus{}
	for i := range c.ends {
		recs.add(fmt.Sprintf("6,%d,%d,-;%s\n", i, i*1000, c.line(i)))
	}
	set := mustDefaults(b)
	mo := NewMonitor(set, clocktesting.NewFakeClock(time.Now()), 0)
	boot := time.Now()
	b.SetBytes(int64(len(recs.buf)))
	b.ReportAllocs()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpu0 := threadCPU(b)
	for b.Loop() {
		for i := range recs.ends {
			rec, err := ParseRecord(recs.line(i))
			if err != nil {
				b.Fatal(err)
			}
			mo.HandleLine(Line{Time: boot.Add(rec.Monotonic), Text: rec.Message})
		}
	}
	cpu := threadCPU(b) - cpu0
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(recs.ends)), "ns/line")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N*len(recs.ends)), "cpu-ns/line")
}

// TestNonMatchingLinesDoNotAllocate is the allocation half of the
// performance goal, as a test.
func TestNonMatchingLinesDoNotAllocate(t *testing.T) {
	c := genCorpus(t, 20000, 0)
	mo := NewMonitor(mustDefaults(t), clocktesting.NewFakeClock(time.Now()), 0)
	now := time.Now()
	i := 0
	allocs := testing.AllocsPerRun(20000, func() {
		mo.HandleLine(Line{Time: now, Text: c.line(i % len(c.ends))})
		i++
	})
	if allocs != 0 {
		t.Errorf("%.3f allocations per non-matching line, want 0", allocs)
	}
	if st := mo.Stats(); st.Matches != 0 {
		t.Errorf("the noise corpus matched %d times: %v", st.Matches, st.MatchesByReason)
	}
}

// TestFloodIsBoundedAndCounted feeds 3,000,000 problem lines (100,000 a
// second for 30 s of log time) between two runs of the check: memory stays
// bounded by the pending limit, and every line not kept is counted and
// reported.
func TestFloodIsBoundedAndCounted(t *testing.T) {
	if testing.Short() {
		t.Skip("3,000,000 lines")
	}
	const total = 3_000_000
	c := genCorpus(t, 10000, 1)
	start := time.Date(2026, 11, 23, 14, 0, 0, 0, time.UTC)
	mo := NewMonitor(mustDefaults(t), clocktesting.NewFakeClock(start), 0)

	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	began := time.Now()
	for i := range total {
		mo.HandleLine(Line{Time: start.Add(time.Duration(i) * 10 * time.Microsecond), Text: c.line(i % len(c.ends))})
	}
	elapsed := time.Since(began)
	runtime.GC()
	runtime.ReadMemStats(&after)
	grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)

	st := mo.Stats()
	got := mo.Findings(start.Add(30 * time.Second))
	var kept, dropped int
	var droppedMsg string
	for _, f := range got {
		switch f.Reason {
		case "KernelLogFindingsDropped":
			droppedMsg = f.Message
			fmt.Sscan(f.Details["dropped"], &dropped)
		default:
			if f.Condition == "" {
				kept++
			}
		}
	}
	t.Logf("%d lines in %s (%.0f ns/line, %.0f lines/s); heap grew %d KiB; kept %d, dropped %d; %s",
		total, elapsed, float64(elapsed.Nanoseconds())/total, total/elapsed.Seconds(), grown>>10, kept, dropped, droppedMsg)
	if st.Matches != total {
		t.Errorf("matched %d of %d problem lines", st.Matches, total)
	}
	if kept != DefaultMaxPending {
		t.Errorf("kept %d findings, want the limit %d", kept, DefaultMaxPending)
	}
	if uint64(kept+dropped) != st.Matches || st.Dropped != uint64(dropped) {
		t.Errorf("kept %d + dropped %d != %d matches (stats say %d dropped): drops went uncounted", kept, dropped, st.Matches, st.Dropped)
	}
	if !strings.Contains(droppedMsg, "ConntrackTableFull=") {
		t.Errorf("drop finding does not break down by reason: %q", droppedMsg)
	}
	// 1000 kept findings with their details are a few MiB at most; a leak
	// per line would be hundreds.
	if grown > 16<<20 {
		t.Errorf("heap grew by %d MiB over the flood", grown>>20)
	}
	if d := mo.Findings(start.Add(31 * time.Second)); len(d) != 3 {
		t.Errorf("after draining, %d findings, want only the 3 conditions", len(d))
	}
}
