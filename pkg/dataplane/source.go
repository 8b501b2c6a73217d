package dataplane

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"
)

// Readers are what a Source reads the tables with; a nil reader means that
// kind of table cannot be read here.
type Readers struct {
	IPTables IPTablesSaver
	NFT      NFTLister
	IPVS     IPVSLister
	// Generation, when set, says the nf_tables ruleset generation: a read
	// of the nft backend or of an nftables table is reused in the next
	// rounds while it is unchanged, and read again when a change tore it.
	// Legacy iptables and IPVS are not in nf_tables and are always read.
	Generation Generationer
}

// Generationer says the nf_tables ruleset generation, which every
// committed change to any nf_tables table of the namespace increments.
type Generationer interface {
	Generation(ctx context.Context) (uint32, error)
}

// readTries bounds the reads of one table in one round while the ruleset
// keeps changing under them (kube-proxy syncing): as nft and
// iptables-nft-save do, the read is tried again.
const readTries = 5

// RuleSink keeps, from one backend and family's nat and filter rules as
// they stream, what its caller compares; P is that compact result. The
// rules' strings are only valid during Rule.
type RuleSink[P any] interface {
	Rule(table, chain string, r IPTRule)
	// Finish is called once both tables were read without error.
	Finish(nat *IPTTable) P
}

// Compactor makes the compact result of each read, so a snapshot never
// holds a whole nat table or nftables table.
type Compactor[P any] interface {
	IPTablesSink() RuleSink[P]
	FromNFT(t *NFTTable) P
}

// SourceOptions tune a Source.
type SourceOptions struct {
	// MaxAge is how long a snapshot is reused: the checks of one round
	// (their tickers start together, so they run within a second or so of
	// each other) share it, and a check running again gets a new one.
	MaxAge time.Duration
	// Deadline bounds one table read, however long its callers wait.
	Deadline time.Duration
	Clock    clock.PassiveClock
	// Metrics, when set, counts the reads.
	Metrics *Metrics
}

// Default Source options.
const (
	DefaultMaxAge = 5 * time.Second
	// DefaultDeadline stays inside kube-proxy-rules' 45s timeout.
	DefaultDeadline = 40 * time.Second
)

// Source hands out snapshots of the packet-filter state: within MaxAge of
// a snapshot's start callers get the same one, and each table of it is
// read once, when first asked for, however many checks ask.
type Source[P any] struct {
	r    Readers
	c    Compactor[P]
	opts SourceOptions

	mu   sync.Mutex
	last *Snapshot[P]
	// The last good reads and the generation they were read at (with
	// Readers.Generation only); guarded by mu.
	iptKept    map[iptKey]kept[*IPTRead[P]]
	mangleKept map[string]kept[*IPTTable]
	nftKept    map[bool]kept[nftRead[P]]
}

// kept is a read made while the ruleset generation was gen.
type kept[T any] struct {
	gen uint32
	v   T
}

// NewSource returns a Source reading with r and compacting with c.
func NewSource[P any](r Readers, c Compactor[P], o SourceOptions) *Source[P] {
	if o.MaxAge <= 0 {
		o.MaxAge = DefaultMaxAge
	}
	if o.Deadline <= 0 {
		o.Deadline = DefaultDeadline
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	return &Source[P]{r: r, c: c, opts: o,
		iptKept: map[iptKey]kept[*IPTRead[P]]{}, mangleKept: map[string]kept[*IPTTable]{}, nftKept: map[bool]kept[nftRead[P]]{}}
}

// Snapshot returns the current snapshot, starting a new one when the last
// is MaxAge old. It reads nothing itself.
func (s *Source[P]) Snapshot() *Snapshot[P] {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.last == nil || s.opts.Clock.Since(s.last.Time) >= s.opts.MaxAge {
		snap := &Snapshot[P]{Time: s.opts.Clock.Now(), src: s,
			ipt: map[iptKey]*unit[*IPTRead[P]]{}, mangle: map[string]*unit[*IPTTable]{}, nft: map[bool]*unit[nftRead[P]]{}, ipvs: map[bool]*unit[*IPVSState]{}}
		s.last = snap
		// Between rounds only the kept reads hold the tables' compact
		// view (at 10,000 Services about 11 MiB).
		time.AfterFunc(s.opts.MaxAge, func() {
			s.mu.Lock()
			if s.last == snap {
				s.last = nil
			}
			s.mu.Unlock()
		})
	}
	return s.last
}

// Invalidate makes the next Snapshot start afresh and read every table.
func (s *Source[P]) Invalidate() {
	s.mu.Lock()
	s.last = nil
	clear(s.iptKept)
	clear(s.mangleKept)
	clear(s.nftKept)
	s.mu.Unlock()
}

// Snapshot is one round's view of the tables. Its parts are read on first
// use and then shared, errors included: a table that failed to read fails
// every check that needs it this round, with the reader's error.
type Snapshot[P any] struct {
	// Time is when the snapshot started: every table in it was read, or
	// found unchanged since its last read (Readers.Generation), at or
	// after Time.
	Time time.Time
	src  *Source[P]

	mu     sync.Mutex
	ipt    map[iptKey]*unit[*IPTRead[P]]
	mangle map[string]*unit[*IPTTable]
	nft    map[bool]*unit[nftRead[P]]
	ipvs   map[bool]*unit[*IPVSState] // one key: load wants a map
}

// IPTRead is one backend and family's nat and filter tables.
type IPTRead[P any] struct {
	// NAT holds the nat table's chains and policies (its rules went to
	// the sink); nil when NATErr is set.
	NAT *IPTTable
	// Filter is the filter table with its rules; nil when FilterErr is set.
	Filter            *IPTTable
	NATErr, FilterErr error
	// Compact is the sink's result over both tables; valid when Err is nil.
	Compact P
}

// Err is the first read error of the two tables.
func (r *IPTRead[P]) Err() error {
	if r.NATErr != nil {
		return r.NATErr
	}
	return r.FilterErr
}

type iptKey struct {
	backend string
	v6      bool
}

type nftRead[P any] struct {
	compact P
	ok      bool
}

// unit is one shared read: done closes when v and err are set.
type unit[T any] struct {
	done    chan struct{}
	v       T
	err     error
	waiters int // guarded by the snapshot's mu
	cancel  context.CancelFunc
}

// HasIPTables says an iptables reader is configured.
func (s *Snapshot[P]) HasIPTables() bool { return s.src.r.IPTables != nil }

// HasNFT says an nftables reader is configured.
func (s *Snapshot[P]) HasNFT() bool { return s.src.r.NFT != nil }

// HasIPVS says an IPVS reader is configured.
func (s *Snapshot[P]) HasIPVS() bool { return s.src.r.IPVS != nil }

// IPVS returns the virtual servers, and kube-ipvs0 and the ipsets where
// the lister reads them.
func (s *Snapshot[P]) IPVS(ctx context.Context) (*IPVSState, error) {
	return load(ctx, s, s.ipvs, true, func(ctx context.Context) (*IPVSState, error) {
		s.src.opts.Metrics.read("ipvs", "all", "ipvs")
		return ReadIPVS(ctx, s.src.r.IPVS)
	})
}

// IPTables returns the nat and filter tables of one iptables backend and
// family. The error is only the caller's context ending while it waited;
// read errors are in the IPTRead.
func (s *Snapshot[P]) IPTables(ctx context.Context, backend string, v6 bool) (*IPTRead[P], error) {
	return load(ctx, s, s.ipt, iptKey{backend, v6}, func(ctx context.Context) (*IPTRead[P], error) {
		fam := family(v6)
		// The read's error is r.Err(): per table, in r.
		r, _ := keptRead(ctx, s.src, s.src.gen(backend), s.src.iptKept, iptKey{backend, v6},
			func() {
				s.src.opts.Metrics.reuse(backend, fam, "nat")
				s.src.opts.Metrics.reuse(backend, fam, "filter")
			},
			func(ctx context.Context) (*IPTRead[P], error) { r := s.readIPT(ctx, backend, v6); return r, r.Err() })
		return r, nil
	})
}

// Mangle returns the IPv4 mangle table of a backend, chains only.
func (s *Snapshot[P]) Mangle(ctx context.Context, backend string) (*IPTTable, error) {
	return load(ctx, s, s.mangle, backend, func(ctx context.Context) (*IPTTable, error) {
		return keptRead(ctx, s.src, s.src.gen(backend), s.src.mangleKept, backend,
			func() { s.src.opts.Metrics.reuse(backend, "ip", "mangle") },
			func(ctx context.Context) (*IPTTable, error) {
				t := &IPTables{Tables: map[string]*IPTTable{}, ChainsOnly: true}
				if err := s.save(ctx, backend, false, "mangle", t); err != nil {
					return nil, err
				}
				return tableOrEmpty(t, "mangle"), nil
			})
	})
}

// NFT returns the compact result of the ip (v6 false) or ip6 kube-proxy
// nftables table; ok is false when the table does not exist.
func (s *Snapshot[P]) NFT(ctx context.Context, v6 bool) (p P, ok bool, err error) {
	r, err := load(ctx, s, s.nft, v6, func(ctx context.Context) (nftRead[P], error) {
		fam := family(v6)
		return keptRead(ctx, s.src, s.src.r.Generation, s.src.nftKept, v6,
			func() { s.src.opts.Metrics.reuse("nftables", fam, "kube-proxy") },
			func(ctx context.Context) (nftRead[P], error) {
				s.src.opts.Metrics.read("nftables", fam, "kube-proxy")
				t := NewNFTTable()
				ok, err := s.src.r.NFT.ListTable(ctx, fam, "kube-proxy", t)
				if err != nil || !ok {
					return nftRead[P]{}, err
				}
				return nftRead[P]{compact: s.src.c.FromNFT(t), ok: true}, nil
			})
	})
	return r.compact, r.ok, err
}

// readIPT streams nat and then filter into one sink: the comparison needs
// both, and filter is kept whole (it is small).
func (s *Snapshot[P]) readIPT(ctx context.Context, backend string, v6 bool) *IPTRead[P] {
	sink := s.src.c.IPTablesSink()
	out := &IPTRead[P]{}
	nat := &IPTables{Tables: map[string]*IPTTable{}, Rules: sink.Rule}
	if out.NATErr = s.save(ctx, backend, v6, "nat", nat); out.NATErr == nil {
		out.NAT = tableOrEmpty(nat, "nat")
	}
	filter := &IPTables{Tables: map[string]*IPTTable{}}
	var strs Interner
	filter.Rules = func(table, chain string, r IPTRule) {
		sink.Rule(table, chain, r)
		c := filter.Tables[table].Chain(chain)
		c.Rules = append(c.Rules, strs.detach(r))
	}
	if out.FilterErr = s.save(ctx, backend, v6, "filter", filter); out.FilterErr == nil {
		out.Filter = tableOrEmpty(filter, "filter")
	}
	if out.Err() == nil {
		out.Compact = sink.Finish(out.NAT)
	}
	return out
}

func (s *Snapshot[P]) save(ctx context.Context, backend string, v6 bool, table string, into *IPTables) error {
	s.src.opts.Metrics.read(backend, family(v6), table)
	return s.src.r.IPTables.Save(ctx, backend, v6, table, into)
}

func family(v6 bool) string {
	if v6 {
		return "ip6"
	}
	return "ip"
}

// gen is the generation reader for an iptables backend: only the nft one
// is in nf_tables.
func (s *Source[P]) gen(backend string) Generationer {
	if backend != BackendNFT {
		return nil
	}
	return s.r.Generation
}

// keptRead returns the read kept under key while the ruleset generation is
// the one it was read at (calling reused), and otherwise reads: the kept
// read is dropped first, so two never coexist. A read the reader found
// torn by a change is tried again, up to readTries times (the rules were
// streamed, so the reader cannot retry itself); a whole read is kept only
// when the generation did not move during it. Without gr, or when it
// fails, every call reads and nothing is kept.
func keptRead[P any, K comparable, T any](ctx context.Context, src *Source[P], gr Generationer, m map[K]kept[T], key K, reused func(), read func(context.Context) (T, error)) (T, error) {
	if gr == nil {
		return read(ctx)
	}
	for try := 1; ; try++ {
		g0, err := gr.Generation(ctx)
		src.mu.Lock()
		k, ok := m[key]
		if err == nil && ok && k.gen == g0 {
			src.mu.Unlock()
			reused()
			return k.v, nil
		}
		delete(m, key)
		src.mu.Unlock()
		v, rerr := read(ctx)
		if errors.Is(rerr, errDumpInterrupted) && try < readTries && ctx.Err() == nil {
			continue
		}
		if err != nil || rerr != nil {
			return v, rerr
		}
		if g1, err := gr.Generation(ctx); err == nil && g1 == g0 {
			src.mu.Lock()
			m[key] = kept[T]{gen: g0, v: v}
			src.mu.Unlock()
		}
		return v, nil
	}
}

// tableOrEmpty is the named table, empty when the dump had none (a legacy
// table never created).
func tableOrEmpty(t *IPTables, name string) *IPTTable {
	if tb := t.Table(name); tb != nil {
		return tb
	}
	return &IPTTable{Name: name, Chains: map[string]*IPTChain{}}
}

// load returns the unit's value, reading it once. The read runs on its own
// context so a caller giving up does not fail it for the others; it ends
// when the last caller waiting for it gives up (a hung reader lives no
// longer than the checks that wanted it, and the next caller reads
// afresh), or at Deadline.
func load[P any, K comparable, T any](ctx context.Context, s *Snapshot[P], m map[K]*unit[T], key K, read func(context.Context) (T, error)) (T, error) {
	s.mu.Lock()
	u := m[key]
	if u == nil {
		u = &unit[T]{done: make(chan struct{})}
		m[key] = u
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.src.opts.Deadline)
		u.cancel = cancel
		go func() {
			defer cancel()
			u.v, u.err = read(rctx)
			close(u.done)
		}()
	}
	u.waiters++
	s.mu.Unlock()
	select {
	case <-u.done:
		return u.v, u.err
	case <-ctx.Done():
		s.mu.Lock()
		if u.waiters--; u.waiters == 0 && m[key] == u {
			select {
			case <-u.done:
			default:
				delete(m, key)
				u.cancel()
			}
		}
		s.mu.Unlock()
		var zero T
		return zero, fmt.Errorf("dataplane: wait for the table read: %w", ctx.Err())
	}
}

// Metrics count the table reads of a Source.
type Metrics struct {
	reads, reuses *prometheus.CounterVec
}

// NewMetrics returns the read counters.
func NewMetrics() *Metrics {
	labels := []string{"backend", "family", "table"}
	return &Metrics{
		reads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "node_doctor_dataplane_table_reads_total",
			Help: "Packet-filter table reads, by backend (nft, legacy: iptables; nftables; ipvs), family (ip, ip6; all for ipvs) and table; at most one per table per round, shared by the network checks (a torn read is tried again)."}, labels),
		reuses: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "node_doctor_dataplane_table_reuses_total",
			Help: "Rounds that reused a table's last read because the nf_tables ruleset generation had not changed since (nft backend and nftables only), by backend, family and table."}, labels),
	}
}

func (m *Metrics) read(backend, family, table string) {
	if m != nil {
		m.reads.WithLabelValues(backend, family, table).Inc()
	}
}

func (m *Metrics) reuse(backend, family, table string) {
	if m != nil {
		m.reuses.WithLabelValues(backend, family, table).Inc()
	}
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	m.reads.Describe(ch)
	m.reuses.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.reads.Collect(ch)
	m.reuses.Collect(ch)
}
