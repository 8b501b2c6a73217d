package netcheck

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"testing/fstest"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/node-doctor/node-doctor/pkg/check"
)

// readHexMsgs reads a capture written by TestPrivilegedCtnetlinkMatchesProcfs.
func readHexMsgs(t testing.TB, name string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "conntrack", name))
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		m, err := hex.DecodeString(l)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

func readConntrackFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "conntrack", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The captures were taken together from the same kernel: both sources must
// agree.
func TestCtnetlinkCapturesMatchProcfs(t *testing.T) {
	for _, c := range []struct {
		prefix           string
		entries, invalid uint64
	}{{"", 37, 4}, {"host-", 0xad6, 0x5a + 0xc5}} {
		nl, err := ParseCtnetlinkStats(readHexMsgs(t, c.prefix+"ctnetlink-stats-cpu.hex"), readHexMsgs(t, c.prefix+"ctnetlink-stats.hex"))
		if err != nil {
			t.Fatal(err)
		}
		proc, err := ParseConntrackStat(readConntrackFixture(t, c.prefix+"nf_conntrack"))
		if err != nil {
			t.Fatal(err)
		}
		if nl.Entries != c.entries || nl.Invalid != c.invalid || nl.CPUs != 2 || nl.Max != 262144 {
			t.Fatalf("%s: %+v", c.prefix, nl)
		}
		proc.Max = nl.Max
		if nl != proc {
			t.Fatalf("%s: ctnetlink %+v, procfs %+v", c.prefix, nl, proc)
		}
	}
}

// nfMsg builds a ctnetlink statistics payload with the given attributes.
func nfMsg(resID uint16, attrs map[uint16]uint32) []byte {
	b := []byte{0, 0, 0, 0}
	binary.BigEndian.PutUint16(b[2:], resID)
	for typ := uint16(1); typ < 20; typ++ {
		v, ok := attrs[typ]
		if !ok {
			continue
		}
		a := make([]byte, 8)
		binary.NativeEndian.PutUint16(a[0:], 8)
		binary.NativeEndian.PutUint16(a[2:], typ)
		binary.BigEndian.PutUint32(a[4:], v)
		b = append(b, a...)
	}
	return b
}

// Every counter lands in its field: the same numbers through the procfs
// parser (columns named as the kernel names them) and the ctnetlink one.
func TestCtnetlinkAttributeMapping(t *testing.T) {
	cpu := map[uint16]uint32{ctaStatsFound: 1, ctaStatsInvalid: 2, ctaStatsInsert: 3, ctaStatsInsertFailed: 4, ctaStatsDrop: 5,
		ctaStatsEarlyDrop: 6, ctaStatsError: 7, ctaStatsSearchRestart: 8, ctaStatsClashResolve: 9, ctaStatsChainTooLong: 10, 1: 99 /* searched, unused */}
	glob := map[uint16]uint32{ctaStatsGlobalEntries: 11, ctaStatsGlobalMaxEntries: 1000}
	nl, err := ParseCtnetlinkStats([][]byte{nfMsg(0, cpu), nfMsg(1, cpu)}, [][]byte{nfMsg(0, glob)})
	if err != nil {
		t.Fatal(err)
	}
	proc := "entries clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error expect_new expect_create expect_delete search_restart\n"
	line := "0000000b 00000009 00000001 00000000 00000002 00000000 00000000 0000000a 00000003 00000004 00000005 00000006 00000007 00000000 00000000 00000000 00000008\n"
	ps, err := ParseConntrackStat([]byte(proc + line + line))
	if err != nil {
		t.Fatal(err)
	}
	want := ConntrackStats{Entries: 11, Max: 1000, Found: 2, Invalid: 4, Insert: 6, InsertFailed: 8, Drop: 10, EarlyDrop: 12, Error: 14,
		SearchRestart: 16, ClashResolve: 18, ChainTooLong: 20, CPUs: 2}
	if nl != want {
		t.Fatalf("ctnetlink %+v\nwant      %+v", nl, want)
	}
	ps.Max = 1000
	if ps != want {
		t.Fatalf("procfs %+v\nwant   %+v", ps, want)
	}
}

func TestCtnetlinkBadInput(t *testing.T) {
	good := readHexMsgs(t, "ctnetlink-stats-cpu.hex")
	glob := readHexMsgs(t, "ctnetlink-stats.hex")
	for name, c := range map[string]struct{ cpus, glob [][]byte }{
		"no CPUs":        {nil, glob},
		"no global":      {good, nil},
		"short header":   {[][]byte{{0, 0}}, glob},
		"truncated attr": {[][]byte{good[0][:len(good[0])-3]}, glob},
		"attr too long":  {[][]byte{append([]byte{0, 0, 0, 0, 0xff, 0, 2, 0}, 0, 0, 0, 0)}, glob},
		"no entries":     {good, [][]byte{nfMsg(0, map[uint16]uint32{ctaStatsGlobalMaxEntries: 5})}},
	} {
		if _, err := ParseCtnetlinkStats(c.cpus, c.glob); err == nil {
			t.Errorf("%s: want error", name)
		}
	}
}

func FuzzParseCtnetlinkStats(f *testing.F) {
	for _, p := range []string{"", "host-"} {
		cpus := readHexMsgs(f, p+"ctnetlink-stats-cpu.hex")
		f.Add(cpus[0], readHexMsgs(f, p+"ctnetlink-stats.hex")[0])
	}
	f.Add([]byte{0, 0, 0, 0, 4, 0, 1, 0}, []byte{0, 0, 0, 0, 5, 0, 1, 0, 1})
	f.Fuzz(func(t *testing.T, cpu, glob []byte) {
		st, err := ParseCtnetlinkStats([][]byte{cpu, cpu}, [][]byte{glob})
		if err == nil && st.CPUs != 2 {
			t.Fatalf("CPUs %d", st.CPUs)
		}
	})
}

type fakeCtnetlink struct {
	st  ConntrackStats
	err error
}

func (f *fakeCtnetlink) Stats(context.Context) (ConntrackStats, error) { return f.st, f.err }

func TestConntrackOverCtnetlink(t *testing.T) {
	fsys := fstest.MapFS{
		"proc/sys/net/netfilter/nf_conntrack_count": {Data: []byte("100\n")},
		"proc/sys/net/netfilter/nf_conntrack_max":   {Data: []byte("1000\n")},
	}
	nl := &fakeCtnetlink{st: ConntrackStats{Entries: 100, Max: 1000, InsertFailed: 3, Drop: 1, Invalid: 7, CPUs: 2}}
	def := Conntrack(fsys, nl)
	f, err := runDef(t, def)
	if err != nil || len(f) != 1 || f[0].Reason != "ConntrackTableOK" || f[0].Details["stats_source"] != "ctnetlink" {
		t.Fatalf("%v %+v", err, f)
	}
	nl.st.InsertFailed = 9
	f, err = def.Check.Run(context.Background())
	if err != nil || len(f) != 2 || f[1].Reason != "ConntrackDropping" || f[1].Details["stats_source"] != "ctnetlink" ||
		!strings.Contains(f[1].Message, "insert_failed rose by 6 and drop by 0") {
		t.Fatalf("%v %+v", err, f)
	}
	c := def.Check.(*conntrackCheck)
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", err, problems)
	}
	want := `
# HELP node_doctor_conntrack_entries_limit Size of the conntrack table (nf_conntrack_max) at the last run.
# TYPE node_doctor_conntrack_entries_limit gauge
node_doctor_conntrack_entries_limit 1000
# HELP node_doctor_conntrack_stat_total The kernel's per-CPU conntrack counters summed over CPUs, as read at the last run (from /proc/net/stat/nf_conntrack or ctnetlink).
# TYPE node_doctor_conntrack_stat_total counter
node_doctor_conntrack_stat_total{stat="chain_too_long"} 0
node_doctor_conntrack_stat_total{stat="clash_resolve"} 0
node_doctor_conntrack_stat_total{stat="drop"} 1
node_doctor_conntrack_stat_total{stat="early_drop"} 0
node_doctor_conntrack_stat_total{stat="error"} 0
node_doctor_conntrack_stat_total{stat="found"} 0
node_doctor_conntrack_stat_total{stat="insert"} 0
node_doctor_conntrack_stat_total{stat="insert_failed"} 9
node_doctor_conntrack_stat_total{stat="invalid"} 7
node_doctor_conntrack_stat_total{stat="search_restart"} 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "node_doctor_conntrack_entries_limit", "node_doctor_conntrack_stat_total"); err != nil {
		t.Fatal(err)
	}

	// A run that cannot read the counters does not lose the last ones.
	nl.err = fmt.Errorf("ctnetlink: per-CPU stats: %w", syscall.ETIMEDOUT)
	if f, err = def.Check.Run(context.Background()); err != nil || f[1].Reason != "ConntrackStatsUnavailable" {
		t.Fatalf("%v %+v", err, f)
	}
	if err := testutil.CollectAndCompare(c, strings.NewReader(""), "node_doctor_conntrack_stat_total"); err != nil {
		t.Fatal(err)
	}
	nl.err, nl.st.Drop = nil, 4
	if f, err = def.Check.Run(context.Background()); err != nil || len(f) != 2 || !strings.Contains(f[1].Message, "insert_failed rose by 0 and drop by 3") {
		t.Fatalf("%v %+v", err, f)
	}

	// procfs wins when the kernel has the file: ctnetlink is not asked.
	fsys["proc/net/stat/nf_conntrack"] = &fstest.MapFile{Data: readConntrackFixture(t, "host-nf_conntrack")}
	nl.err = fmt.Errorf("must not be called")
	f, err = runDef(t, Conntrack(fsys, nl))
	if err != nil || f[0].Details["stats_source"] != "procfs" {
		t.Fatalf("%v %+v", err, f)
	}
}

func TestConntrackCtnetlinkRefused(t *testing.T) {
	fsys := fstest.MapFS{
		"proc/sys/net/netfilter/nf_conntrack_count": {Data: []byte("10\n")},
		"proc/sys/net/netfilter/nf_conntrack_max":   {Data: []byte("1000\n")},
	}
	f, err := runDef(t, Conntrack(fsys, &fakeCtnetlink{err: fmt.Errorf("ctnetlink: per-CPU stats: %w", syscall.EPERM)}))
	if err != nil || len(f) != 2 || f[1].Reason != "ConntrackStatsUnavailable" || f[1].Severity != check.SeverityWarning ||
		!strings.Contains(f[1].Message, "CAP_NET_ADMIN") || f[1].Condition != check.ConditionConntrack {
		t.Fatalf("%v %+v", err, f)
	}
	f, err = runDef(t, Conntrack(fsys, nil))
	if err != nil || len(f) != 2 || f[1].Reason != "ConntrackStatsUnavailable" || f[1].Severity != check.SeverityOK {
		t.Fatalf("%v %+v", err, f)
	}
}

func FuzzParseConntrackStat(f *testing.F) {
	f.Add(readConntrackFixture(f, "nf_conntrack"))
	f.Add(readConntrackFixture(f, "host-nf_conntrack"))
	f.Add([]byte("entries drop\nzz 1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ParseConntrackStat(b)
	})
}

// BenchmarkConntrackStats compares the two sources on this machine's own
// conntrack table (read only; root for ctnetlink).
func BenchmarkConntrackStats(b *testing.B) {
	b.Run("procfs", func(b *testing.B) {
		for b.Loop() {
			raw, err := os.ReadFile("/proc/net/stat/nf_conntrack")
			if err != nil {
				b.Skip(err)
			}
			if _, err := ParseConntrackStat(raw); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ctnetlink", func(b *testing.B) {
		if os.Geteuid() != 0 {
			b.Skip("ctnetlink needs CAP_NET_ADMIN")
		}
		ctx := context.Background()
		for b.Loop() {
			if _, err := (Ctnetlink{NS: -1}).Stats(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}
