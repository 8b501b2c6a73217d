package dataplane

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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
