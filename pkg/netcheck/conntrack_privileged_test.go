package netcheck

import (
	"github.com/node-doctor/node-doctor/pkg/dataplane"

	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"testing/fstest"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/node-doctor/node-doctor/internal/testnetns"
)

// conntrackNS is a throwaway namespace whose conntrack table holds exactly
// the entries the test made: UDP datagrams to its veth peer in a second
// namespace, each to another port. With invalid, a TCP connection to the
// peer first loses its entry (conntrack -F, in that namespace) while
// nf_conntrack_tcp_loose is 0 there, so its next packets count as invalid.
func conntrackNS(t *testing.T, flows int, invalid bool) *testnetns.NS {
	t.Helper()
	a, b := testnetns.New(t), testnetns.New(t)
	a.Exec(t, "ip", "link", "add", "ct0", "type", "veth", "peer", "name", "ct1", "netns", b.Name)
	a.Exec(t, "ip", "addr", "add", "10.99.0.1/24", "dev", "ct0")
	a.Exec(t, "ip", "link", "set", "ct0", "up")
	b.Exec(t, "ip", "addr", "add", "10.99.0.2/24", "dev", "ct1")
	b.Exec(t, "ip", "link", "set", "ct1", "up")
	// The kernel tracks connections in a namespace only once a rule there
	// needs conntrack.
	a.Exec(t, "nft", "add table ip ndct; add chain ip ndct out { type filter hook output priority 0 ; } ; add rule ip ndct out ct state new counter")
	if invalid {
		a.Sysctl(t, "net.netfilter.nf_conntrack_tcp_loose", "0")
		ln := exec.Command("ip", "netns", "exec", b.Name, "busybox", "nc", "-l", "-p", "5000")
		if err := ln.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ln.Process.Kill(); _ = ln.Wait() })
		a.Exec(t, "bash", "-c", `for i in 1 2 3 4 5 6 7 8 9 10; do exec 3<>/dev/tcp/10.99.0.2/5000 && break; sleep 0.1; done
echo a >&3; conntrack -F; echo b >&3; sleep 0.2; exec 3>&-; sleep 0.3`)
	}
	a.Exec(t, "bash", "-c", fmt.Sprintf(`for p in $(seq 40001 %d); do echo x > /dev/udp/10.99.0.2/$p; done`, 40000+flows))
	return a
}

func nsFile(t *testing.T, ns *testnetns.NS, path string) []byte {
	t.Helper()
	return []byte(ns.Exec(t, "cat", path))
}

// TestPrivilegedCtnetlinkMatchesProcfs reads a namespace's conntrack
// statistics over ctnetlink and from procfs and compares them, with the
// entry count known from the traffic the test sent.
func TestPrivilegedCtnetlinkMatchesProcfs(t *testing.T) {
	const flows = 37
	ns := conntrackNS(t, flows, true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cpus, glob, err := Ctnetlink{NS: ns.Handle}.raw(ctx)
	if err != nil {
		t.Fatal(err)
	}
	procStat := nsFile(t, ns, "/proc/net/stat/nf_conntrack")
	nl, err := ParseCtnetlinkStats(cpus, glob)
	if err != nil {
		t.Fatal(err)
	}
	proc, err := ParseConntrackStat(procStat)
	if err != nil {
		t.Fatal(err)
	}
	maxv, err := strconv.ParseUint(strings.TrimSpace(string(nsFile(t, ns, "/proc/sys/net/netfilter/nf_conntrack_max"))), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	if nl.Entries != flows || proc.Entries != flows {
		t.Fatalf("entries: ctnetlink %d, procfs %d, want %d (one per datagram port)", nl.Entries, proc.Entries, flows)
	}
	if nl.Invalid == 0 {
		t.Fatalf("invalid = 0: the packets after the flush should count (%+v)", nl)
	}
	if nl.Max != maxv {
		t.Fatalf("max: ctnetlink %d, nf_conntrack_max %d", nl.Max, maxv)
	}
	proc.Max = nl.Max
	if nl != proc {
		t.Fatalf("ctnetlink and procfs differ:\nctnetlink %+v\nprocfs    %+v", nl, proc)
	}
	if os.Getenv("ND_WRITE_FIXTURES") != "" {
		writeHex := func(name string, msgs [][]byte) {
			var b strings.Builder
			b.WriteString("# " + name + ": netlink payloads captured from kernel " + kernelRelease() + ", one per line, hex\n")
			for _, m := range msgs {
				b.WriteString(hex.EncodeToString(m) + "\n")
			}
			if err := os.WriteFile(filepath.Join("testdata", "conntrack", name), []byte(b.String()), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.MkdirAll(filepath.Join("testdata", "conntrack"), 0o755); err != nil {
			t.Fatal(err)
		}
		writeHex("ctnetlink-stats-cpu.hex", cpus)
		writeHex("ctnetlink-stats.hex", glob)
		if err := os.WriteFile(filepath.Join("testdata", "conntrack", "nf_conntrack"), procStat, 0o644); err != nil {
			t.Fatal(err)
		}
		// The host's counters are not all zero; read only.
		hc, hg, err := Ctnetlink{NS: -1}.raw(ctx)
		if err != nil {
			t.Fatal(err)
		}
		hp, err := os.ReadFile("/proc/net/stat/nf_conntrack")
		if err != nil {
			t.Fatal(err)
		}
		writeHex("host-ctnetlink-stats-cpu.hex", hc)
		writeHex("host-ctnetlink-stats.hex", hg)
		if err := os.WriteFile(filepath.Join("testdata", "conntrack", "host-nf_conntrack"), hp, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func kernelRelease() string {
	var u syscall.Utsname
	if syscall.Uname(&u) != nil {
		return "?"
	}
	var b []byte
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return string(b)
}

// TestPrivilegedConntrackWithoutProcfsStat runs the check against a host
// filesystem without /proc/net/stat/nf_conntrack (as on kernels built
// without CONFIG_NF_CONNTRACK_PROCFS) and real ctnetlink.
func TestPrivilegedConntrackWithoutProcfsStat(t *testing.T) {
	const flows = 12
	ns := conntrackNS(t, flows, false)
	fsys := fstest.MapFS{
		"proc/sys/net/netfilter/nf_conntrack_count": {Data: nsFile(t, ns, "/proc/sys/net/netfilter/nf_conntrack_count")},
		"proc/sys/net/netfilter/nf_conntrack_max":   {Data: nsFile(t, ns, "/proc/sys/net/netfilter/nf_conntrack_max")},
	}
	def := Conntrack(fsys, Ctnetlink{NS: ns.Handle})
	f, err := runDef(t, def)
	if err != nil {
		t.Fatal(err)
	}
	if len(f) != 1 || f[0].Reason != "ConntrackTableOK" || f[0].Details["stats_source"] != ConntrackSourceCtnetlink || f[0].Details["count"] != strconv.Itoa(flows) {
		t.Fatalf("%+v", f)
	}
	proc, err := ParseConntrackStat(nsFile(t, ns, "/proc/net/stat/nf_conntrack"))
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(`
# HELP node_doctor_conntrack_entries Connections in the conntrack table at the last run.
# TYPE node_doctor_conntrack_entries gauge
node_doctor_conntrack_entries %d
# HELP node_doctor_conntrack_stats_source 1 for where the last run read the per-CPU conntrack counters: procfs, ctnetlink or none.
# TYPE node_doctor_conntrack_stats_source gauge
node_doctor_conntrack_stats_source{source="ctnetlink"} 1
node_doctor_conntrack_stats_source{source="none"} 0
node_doctor_conntrack_stats_source{source="procfs"} 0
`, flows)
	c := def.Check.(*conntrackCheck)
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "node_doctor_conntrack_entries", "node_doctor_conntrack_stats_source"); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	got := *c.cur
	c.mu.Unlock()
	got.Max = 0
	if got != proc {
		t.Fatalf("counters over ctnetlink %+v, procfs %+v", got, proc)
	}
}

// TestPrivilegedCtnetlinkNeedsNetAdmin finds out for real what the agent's
// container needs for ctnetlink and ipset reads: the same reads from a process of an unprivileged user,
// once without capabilities and once with only CAP_NET_ADMIN.
func TestPrivilegedCtnetlinkNeedsNetAdmin(t *testing.T) {
	if os.Getenv("ND_CTNETLINK_CHILD") != "" {
		_, err := Ctnetlink{NS: -1}.Stats(context.Background())
		_, err2 := dataplane.MobyIPVS{}.IPSets(context.Background())
		for _, e := range []error{err, err2} {
			if errors.Is(e, syscall.EPERM) {
				fmt.Println("RESULT EPERM")
			} else {
				fmt.Println("RESULT", e)
			}
		}
		return
	}
	testnetns.RequireRoot(t)
	// The test binary's build directory is private to root: copy it where
	// the unprivileged user can run it.
	dir := t.TempDir()
	bin := filepath.Join(dir, "netcheck.test")
	b, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	run := func(caps []uintptr) []string {
		cmd := exec.Command(bin, "-test.run=^TestPrivilegedCtnetlinkNeedsNetAdmin$")
		cmd.Env = append(os.Environ(), "ND_CTNETLINK_CHILD=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}, AmbientCaps: caps}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("child: %v: %s", err, out)
		}
		var res []string
		for _, l := range strings.Split(string(out), "\n") {
			if r, ok := strings.CutPrefix(l, "RESULT "); ok {
				res = append(res, r)
			}
		}
		if len(res) != 2 {
			t.Fatalf("child printed no results: %s", out)
		}
		return res
	}
	// Reads only this namespace's conntrack statistics and ipsets; nothing
	// is changed. ipset is an nfnetlink subsystem too.
	if r := run(nil); r[0] != "EPERM" || r[1] != "EPERM" {
		t.Fatalf("without CAP_NET_ADMIN: ctnetlink %s, ipset %s; want EPERM", r[0], r[1])
	}
	const capNetAdmin = 12
	if r := run([]uintptr{capNetAdmin}); r[0] != "<nil>" || r[1] != "<nil>" {
		t.Fatalf("with CAP_NET_ADMIN: ctnetlink %s, ipset %s; want success", r[0], r[1])
	}
}
