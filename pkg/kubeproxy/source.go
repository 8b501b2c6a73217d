package kubeproxy

import (
	"github.com/node-doctor/node-doctor/pkg/dataplane"
)

// Source is the data-plane snapshot source the network checks share: each
// round's iptables nat and filter tables stream once into the comparison's
// collector, and kube-proxy's nftables tables are read once into the same
// compact view, so no whole table is held.
type Source = dataplane.Source[*Programmed]

// Snapshot is one round of a Source.
type Snapshot = dataplane.Snapshot[*Programmed]

// NewSource returns a Source reading with r.
func NewSource(r dataplane.Readers, o dataplane.SourceOptions) *Source {
	return dataplane.NewSource[*Programmed](r, compactor{}, o)
}

// compactor makes Programmed, what Compare reads, from each read.
type compactor struct{}

func (compactor) IPTablesSink() dataplane.RuleSink[*Programmed] { return sink{newIPTCollector()} }

func (compactor) FromNFT(t *dataplane.NFTTable) *Programmed { return ProgrammedFromNFT(t) }

type sink struct{ c *iptCollector }

func (s sink) Rule(table, chain string, r dataplane.IPTRule) { s.c.rule(table, chain, r) }

func (s sink) Finish(nat *dataplane.IPTTable) *Programmed { return s.c.finish(nat) }
