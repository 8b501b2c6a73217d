package dataplane

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	clocktesting "k8s.io/utils/clock/testing"
)

// ruleCount is a compactor that counts the rules it was streamed.
type ruleCount struct{}

type countSink struct{ n int }

func (c *countSink) Rule(string, string, IPTRule) { c.n++ }
func (c *countSink) Finish(*IPTTable) int         { return c.n }

func (ruleCount) IPTablesSink() RuleSink[int] { return &countSink{} }
func (ruleCount) FromNFT(t *NFTTable) int     { return len(t.Chains) }

// slowSaver serves one nat and one filter rule, slowly, and counts reads.
type slowSaver struct {
	reads, cancelled atomic.Int32
	release          chan struct{}
}

func (s *slowSaver) Save(ctx context.Context, backend string, v6 bool, table string, into *IPTables) error {
	s.reads.Add(1)
	select {
	case <-s.release:
	case <-ctx.Done():
		s.cancelled.Add(1)
		return ctx.Err()
	}
	return ParseIPTablesSaveInto(strings.NewReader("*"+table+"\n:KUBE-X - [0:0]\n-A KUBE-X -j RETURN\nCOMMIT\n"), into)
}

func TestSourceSharesOneReadPerRound(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC))
	sv := &slowSaver{release: make(chan struct{})}
	src := NewSource[int](Readers{IPTables: sv}, ruleCount{}, SourceOptions{Clock: clk})
	// A caller giving up while the read runs does not fail it for the rest.
	gaveUp, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { _, err := src.Snapshot().IPTables(gaveUp, BackendNFT, false); errc <- err }()
	var wg sync.WaitGroup
	got := make([]*IPTRead[int], 4)
	for i := range got {
		wg.Go(func() { got[i], _ = src.Snapshot().IPTables(context.Background(), BackendNFT, false) })
	}
	time.Sleep(20 * time.Millisecond)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("the caller that gave up: %v", err)
	}
	close(sv.release)
	wg.Wait()
	for _, r := range got {
		if r == nil || r.Err() != nil || r.Compact != 2 || r.Filter.Chain("KUBE-X") == nil || len(r.Filter.Chain("KUBE-X").Rules) != 1 || len(r.NAT.Chain("KUBE-X").Rules) != 0 {
			t.Fatalf("read %+v", r)
		}
	}
	if n := sv.reads.Load(); n != 2 { // nat and filter, once
		t.Errorf("%d reads for one round", n)
	}
	clk.Step(DefaultMaxAge - time.Second)
	_, _ = src.Snapshot().IPTables(context.Background(), BackendNFT, false)
	if n := sv.reads.Load(); n != 2 {
		t.Errorf("within MaxAge: %d reads", n)
	}
	clk.Step(time.Second)
	snap := src.Snapshot()
	_, _ = snap.IPTables(context.Background(), BackendNFT, false)
	if n := sv.reads.Load(); n != 4 || !snap.Time.Equal(clk.Now()) {
		t.Errorf("next round: %d reads, snapshot time %s", n, snap.Time)
	}
}

// A read every caller gave up on is cancelled (a hung reader does not
// outlive the checks that wanted it), and the next caller reads again.
func TestSourceAbandonedReadIsCancelled(t *testing.T) {
	sv := &slowSaver{release: make(chan struct{})} // never released
	src := NewSource[int](Readers{IPTables: sv}, ruleCount{}, SourceOptions{})
	snap := src.Snapshot()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := snap.IPTables(ctx, BackendNFT, false); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("caller that timed out: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for sv.cancelled.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if sv.cancelled.Load() == 0 {
		t.Fatal("the abandoned read was not cancelled")
	}
	close(sv.release)
	r, err := snap.IPTables(context.Background(), BackendNFT, false)
	if err != nil || r.Err() != nil || r.Compact != 2 {
		t.Fatalf("next caller: %v %+v", err, r)
	}
}

// genRuleset is a fake packet filter with a generation: each read counts,
// can be torn (the reader says errDumpInterrupted), and can commit a change
// while it runs.
type genRuleset struct {
	mu     sync.Mutex
	gen    uint32
	genErr error
	reads  map[string]int
	// torn reads of nat still to come; bump: reads that still move the
	// generation while they run.
	torn, bump int
}

func (g *genRuleset) Generation(context.Context) (uint32, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.gen, g.genErr
}

func (g *genRuleset) Save(ctx context.Context, backend string, v6 bool, table string, into *IPTables) error {
	g.mu.Lock()
	g.reads[backend+"/"+table]++
	torn := table == "nat" && g.torn > 0
	if torn {
		g.torn--
	}
	if g.bump > 0 {
		g.bump--
		g.gen++
	}
	g.mu.Unlock()
	if torn {
		return fmt.Errorf("%w (generation 1 to 2)", errDumpInterrupted)
	}
	return ParseIPTablesSaveInto(strings.NewReader("*"+table+"\n:KUBE-X - [0:0]\n-A KUBE-X -j RETURN\nCOMMIT\n"), into)
}

func (g *genRuleset) ListTable(ctx context.Context, family, table string, into *NFTTable) (bool, error) {
	g.mu.Lock()
	g.reads["nftables/"+family]++
	g.mu.Unlock()
	*into = *NewNFTTable()
	into.Chains = map[string]*NFTChain{"services": {}}
	return true, nil
}

func (g *genRuleset) set(f func(g *genRuleset)) {
	g.mu.Lock()
	f(g)
	g.mu.Unlock()
}

func (g *genRuleset) count(k string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.reads[k]
}

// readRound reads every kind of table once in a new round.
func readRound(t *testing.T, src *Source[int], clk *clocktesting.FakeClock) (nft, legacy *IPTRead[int], nftOK bool) {
	t.Helper()
	clk.Step(DefaultMaxAge)
	snap := src.Snapshot()
	ctx := context.Background()
	nft, _ = snap.IPTables(ctx, BackendNFT, false)
	legacy, _ = snap.IPTables(ctx, BackendLegacy, false)
	if _, err := snap.Mangle(ctx, BackendNFT); err != nil {
		t.Fatalf("mangle: %v", err)
	}
	_, nftOK, err := snap.NFT(ctx, false)
	if err != nil {
		t.Fatalf("nftables: %v", err)
	}
	return nft, legacy, nftOK
}

// A round reuses what nf_tables says has not changed since its last read
// and reads the rest; legacy iptables, not in nf_tables, is always read.
func TestSourceReusesUnchangedGeneration(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC))
	g := &genRuleset{gen: 7, reads: map[string]int{}}
	m := NewMetrics()
	src := NewSource[int](Readers{IPTables: g, NFT: g, Generation: g}, ruleCount{}, SourceOptions{Clock: clk, Metrics: m})
	want := func(name string, nft, legacy int) {
		t.Helper()
		for k, n := range map[string]int{"nft/nat": nft, "nft/filter": nft, "nft/mangle": nft, "nftables/ip": nft, "legacy/nat": legacy, "legacy/filter": legacy} {
			if got := g.count(k); got != n {
				t.Errorf("%s: %s read %d times, want %d", name, k, got, n)
			}
		}
	}
	first, _, _ := readRound(t, src, clk)
	want("first", 1, 1)
	again, legacy, ok := readRound(t, src, clk)
	want("unchanged", 1, 2)
	if again != first || again.Err() != nil || again.Compact != 2 || legacy.Compact != 2 || !ok {
		t.Errorf("unchanged: reused %p %+v, first %p; legacy %+v", again, again, first, legacy)
	}
	if n := testutil.ToFloat64(m.reuses.WithLabelValues(BackendNFT, "ip", "nat")); n != 1 {
		t.Errorf("nat reuses: %v", n)
	}
	g.set(func(g *genRuleset) { g.gen++ })
	changed, _, _ := readRound(t, src, clk)
	want("changed", 2, 3)
	if changed == first {
		t.Error("changed: the old read was reused")
	}
	// Without a generation, every round reads.
	g.set(func(g *genRuleset) { g.genErr = errors.New("nf_tables: generation: EPERM") })
	readRound(t, src, clk)
	readRound(t, src, clk)
	want("no generation", 4, 5)
	// Invalidate reads everything again.
	g.set(func(g *genRuleset) { g.genErr = nil })
	readRound(t, src, clk)
	src.Invalidate()
	readRound(t, src, clk)
	want("invalidated", 6, 7)
}

// A read the reader found torn is tried again; a whole read the
// generation moved under is used but not kept; reads torn every time fail
// after readTries with the reader's error.
func TestSourceRetriesTornRead(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC))
	g := &genRuleset{gen: 1, reads: map[string]int{}, torn: 2}
	src := NewSource[int](Readers{IPTables: g, NFT: g, Generation: g}, ruleCount{}, SourceOptions{Clock: clk})
	r, _, _ := readRound(t, src, clk)
	if r.Err() != nil || r.Compact != 2 || g.count("nft/nat") != 3 {
		t.Fatalf("torn twice: %v, nat read %d times", r.Err(), g.count("nft/nat"))
	}
	g.set(func(g *genRuleset) { g.gen, g.bump = g.gen+1, 1 })
	r, _, _ = readRound(t, src, clk)
	if r.Err() != nil || g.count("nft/nat") != 4 {
		t.Fatalf("moved once: %v, nat read %d times", r.Err(), g.count("nft/nat"))
	}
	readRound(t, src, clk)
	if n := g.count("nft/nat"); n != 5 {
		t.Fatalf("a read the generation moved under was kept: nat read %d times", n)
	}
	g.set(func(g *genRuleset) { g.torn, g.gen = 100, g.gen+1 })
	r, _, _ = readRound(t, src, clk)
	if !errors.Is(r.NATErr, errDumpInterrupted) || g.count("nft/nat") != 5+readTries {
		t.Fatalf("torn every time: %v, nat read %d times", r.NATErr, g.count("nft/nat"))
	}
	// Legacy is never retried: its reader cannot be torn this way.
	if n := g.count("legacy/nat"); n != 4 {
		t.Errorf("legacy nat read %d times in 4 rounds", n)
	}
}
