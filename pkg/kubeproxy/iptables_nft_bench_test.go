package kubeproxy

import (
	"github.com/node-doctor/node-doctor/pkg/dataplane"

	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/node-doctor/node-doctor/internal/testnetns"
)

// BenchmarkPrivilegedNATRead10k reads the nat table of 10,000 generated
// kube-proxy Services x 5 endpoints (60,000 chains, 170,000 rules) loaded
// into a throwaway namespace's iptables-nft, into the kube-proxy comparison,
// with the netlink reader and with iptables-nft-save. child-peak-MiB is the
// iptables-nft-save process's own peak RSS (the agent's cgroup pays it too).
// netlink-unchanged-round is a round of the snapshot source that finds the
// ruleset generation unchanged since its last read.
//
//	ND_SCALE=1 go test ./pkg/kubeproxy -run '^$' -bench BenchmarkPrivilegedNATRead10k -benchtime 3x
func BenchmarkPrivilegedNATRead10k(b *testing.B) {
	if os.Getenv("ND_SCALE") == "" {
		b.Skip("scale benchmark (loading the rules takes about a minute): set ND_SCALE=1")
	}
	ns := testnetns.New(b)
	var buf bytes.Buffer
	svcs, eps := genKubeProxy(&buf, 10000, 5)
	load := exec.Command("ip", "netns", "exec", ns.Name, "iptables-nft-restore")
	load.Stdin = bytes.NewReader(buf.Bytes())
	if out, err := load.CombinedOutput(); err != nil {
		b.Fatalf("load rules: %v: %s", err, out)
	}
	desired := DesiredServicePorts(svcs, eps, "n")
	readers := []struct {
		name string
		s    dataplane.IPTablesSaver
	}{
		{"netlink", dataplane.NetlinkIPTablesSaver{NS: ns.Handle}},
		{"exec", dataplane.ExecIPTablesSaver{Prefix: []string{"ip", "netns", "exec", ns.Name}}},
	}
	for _, rd := range readers {
		b.Run(rd.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				col := newIPTCollector()
				ipt := &dataplane.IPTables{Tables: map[string]*dataplane.IPTTable{}, Rules: col.rule}
				if err := rd.s.Save(context.Background(), dataplane.BackendNFT, false, "nat", ipt); err != nil {
					b.Fatal(err)
				}
				p := col.finish(ipt.Table("nat"))
				if disc, _, _ := Compare(desired, p); len(disc) != 0 || p.Unknown != 0 {
					b.Fatalf("%d discrepancies, %d undecoded", len(disc), p.Unknown)
				}
			}
		})
	}
	// A round through the snapshot source when nothing changed since the
	// last read: the generation is asked, the kept read compared.
	b.Run("netlink-unchanged-round", func(b *testing.B) {
		sv := &countingSaver{s: dataplane.NetlinkIPTablesSaver{NS: ns.Handle}}
		clk := clocktesting.NewFakeClock(time.Now())
		src := NewSource(dataplane.Readers{IPTables: sv, Generation: dataplane.NFTGeneration{NS: ns.Handle}}, dataplane.SourceOptions{Clock: clk})
		round := func() {
			clk.Step(dataplane.DefaultMaxAge)
			r, _ := src.Snapshot().IPTables(context.Background(), dataplane.BackendNFT, false)
			if r.Err() != nil {
				b.Fatal(r.Err())
			}
			if disc, _, _ := Compare(desired, r.Compact); len(disc) != 0 || r.Compact.Unknown != 0 {
				b.Fatalf("%d discrepancies, %d undecoded", len(disc), r.Compact.Unknown)
			}
		}
		round()
		b.ReportAllocs()
		for b.Loop() {
			round()
		}
		if sv.n.Load() != 2 {
			b.Fatalf("%d table reads, want nat and filter once", sv.n.Load())
		}
	})
	// The child alone, for its peak RSS (ru_maxrss of the waited process).
	b.Run("iptables-nft-save-alone", func(b *testing.B) {
		var peak int64
		for b.Loop() {
			cmd := exec.Command("ip", "netns", "exec", ns.Name, "iptables-nft-save", "-t", "nat")
			cmd.Stdout = io.Discard
			if err := cmd.Run(); err != nil {
				b.Fatal(err)
			}
			if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
				peak = max(peak, ru.Maxrss)
			}
		}
		b.ReportMetric(float64(peak)/1024, "child-peak-MiB")
	})
}

type countingSaver struct {
	s dataplane.IPTablesSaver
	n atomic.Int32
}

func (c *countingSaver) Save(ctx context.Context, backend string, v6 bool, table string, into *dataplane.IPTables) error {
	c.n.Add(1)
	return c.s.Save(ctx, backend, v6, table, into)
}
