package dataplane

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/mdlayher/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NetlinkIPTablesSaver reads the iptables-nft backend's tables over
// nf_tables netlink, as iptables-nft-save would print them, without
// running a process. The legacy backend is not in nf_tables: it goes to
// Fallback (the iptables-legacy-save reader), since legacy is the rare case
// now and reading it natively (IPT_SO_GET_ENTRIES) is another decoder of the
// whole xtables format for little gain.
//
// Rules with an expression or xt revision this reader has no decoder for
// are kept with IPTRule.Undecoded set, never guessed at.
type NetlinkIPTablesSaver struct {
	// NS is the network namespace to read; netns.None() (-1): the agent's.
	NS netns.NsHandle
	// Fallback reads the legacy backend; nil: legacy reads nothing.
	Fallback IPTablesSaver
}

// Save reads one table of one backend into into.
func (n NetlinkIPTablesSaver) Save(ctx context.Context, backend string, ipv6 bool, table string, into *IPTables) error {
	if backend != BackendNFT {
		if n.Fallback == nil {
			return nil
		}
		return n.Fallback.Save(ctx, backend, ipv6, table, into)
	}
	c, err := dialNFTables(n.NS)
	if err != nil {
		return err
	}
	defer c.Close()
	gen, err := nftGeneration(ctx, c)
	if err != nil {
		return err
	}
	if err := readNFTIPTable(ctx, c, ipv6, table, into); err != nil {
		return err
	}
	// One dump per chain is not one snapshot: a ruleset changed during the
	// read (kube-proxy syncing) may have given a chain's jump without the
	// chain. The rules already went to into, so this run fails rather than
	// compare a torn read; iptables-nft-save, which holds its whole dump,
	// retries instead.
	if after, err := nftGeneration(ctx, c); err != nil {
		return err
	} else if after != gen {
		return fmt.Errorf("%w (generation %d to %d; read again next run)", errDumpInterrupted, gen, after)
	}
	return nil
}

func readNFTIPTable(ctx context.Context, c *netlink.Conn, ipv6 bool, table string, into *IPTables) error {
	fam := byte(unix.NFPROTO_IPV4)
	if ipv6 {
		fam = unix.NFPROTO_IPV6
	}
	var chains []nftChainInfo
	buf := make([]byte, nftReadBuf)
	err := nftDump(ctx, c, buf, unix.NFT_MSG_GETCHAIN, fam,
		[]netlink.Attribute{{Type: unix.NFTA_CHAIN_TABLE, Data: append([]byte(table), 0)}},
		func(body []byte) error {
			t, ch, err := decodeNFTChain(body)
			if err != nil {
				return err
			}
			if t == table {
				chains = append(chains, ch)
			}
			return nil
		})
	if errors.Is(err, unix.ENOENT) {
		err = nil // no such table yet
	}
	if err != nil {
		return fmt.Errorf("nf_tables: list chains of %s: %w", table, err)
	}
	// iptables-nft-save prints a table's built-in chains whether or not
	// they exist in the kernel yet, with policy ACCEPT.
	for _, b := range builtinChains[table] {
		if !slices.ContainsFunc(chains, func(c nftChainInfo) bool { return c.Name == b.Name }) {
			chains = append(chains, b)
		}
	}
	if len(chains) == 0 {
		return nil
	}
	// iptables-nft-save's order: built-in chains by hook, then the rest by
	// name.
	slices.SortStableFunc(chains, func(a, b nftChainInfo) int {
		if a.Base != b.Base {
			if a.Base {
				return -1
			}
			return 1
		}
		if a.Base {
			return cmp.Compare(a.Hook, b.Hook)
		}
		return cmp.Compare(a.Name, b.Name)
	})
	if into.Tables == nil {
		into.Tables = map[string]*IPTTable{}
	}
	cur := into.Tables[table]
	if cur == nil {
		cur = &IPTTable{Name: table, Chains: map[string]*IPTChain{}}
		into.Tables[table] = cur
	}
	var strs Interner
	for _, ch := range chains {
		cur.chain(strs.Get(ch.Name)).Policy = strs.Get(ch.Policy)
	}
	if into.ChainsOnly {
		return nil
	}
	return readNFTRules(ctx, c, buf, fam, ipv6, table, chains, func(r nftRuleLine, toks []string) error {
		rule, chain, err := parseIPTRule(r.Line, toks)
		if err != nil {
			return fmt.Errorf("nf_tables: rule in %s: %w", r.Chain, err)
		}
		rule.Undecoded = r.Unknown
		into.add(cur, chain, rule, &strs)
		return nil
	})
}

// readNFTRules dumps the rules of each chain, one dump per chain: the
// kernel finds a named chain by hash, while a whole-table dump rescans the
// table from its start for every datagram (quadratic: 37 s instead of
// about 4 s at 10,000 Services). The dumps and the decoding run side by
// side, as iptables-nft-save and its parser do in two processes; the
// decoded rules reach fn in chain order, on the caller's goroutine.
func readNFTRules(ctx context.Context, c *netlink.Conn, buf []byte, fam byte, ipv6 bool, table string, chains []nftChainInfo, fn func(nftRuleLine, []string) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Batches grow by append to batchSize, so a small table's read
	// allocates a few KiB, not four whole batches.
	const batchSize = 256 << 10
	batches := make(chan []byte, 2)
	free := make(chan []byte, 4)
	for range cap(free) {
		free <- nil
	}
	errc := make(chan error, 1)
	go func() {
		defer close(batches)
		b := <-free
		send := func() bool {
			select {
			case batches <- b:
			case <-ctx.Done():
				return false
			}
			select {
			case b = <-free:
			case <-ctx.Done():
				return false
			}
			return true
		}
		for _, ch := range chains {
			err := nftDump(ctx, c, buf, unix.NFT_MSG_GETRULE, fam,
				[]netlink.Attribute{
					{Type: unix.NFTA_RULE_TABLE, Data: append([]byte(table), 0)},
					{Type: unix.NFTA_RULE_CHAIN, Data: append([]byte(ch.Name), 0)},
				},
				func(body []byte) error {
					if len(b) > 0 && len(b)+4+len(body) > batchSize && !send() {
						return ctx.Err()
					}
					b = binary.NativeEndian.AppendUint32(b, uint32(len(body)))
					b = append(b, body...)
					return nil
				})
			if errors.Is(err, unix.ENOENT) {
				continue // a built-in chain not created yet, or one just deleted
			}
			if err != nil {
				errc <- fmt.Errorf("nf_tables: list rules of %s %s: %w", table, ch.Name, err)
				return
			}
		}
		if len(b) > 0 {
			send()
		}
		errc <- nil
	}()
	var derr error
	toks := make([]string, 0, 32)
	for batch := range batches {
		for b := batch; derr == nil && len(b) >= 4; {
			n := int(binary.NativeEndian.Uint32(b))
			body := b[4 : 4+n]
			b = b[4+n:]
			r, err := decodeNFTRule(body, ipv6)
			if err == nil && r.Table == table {
				err = fn(r, toks[:0])
			}
			if err != nil {
				derr = err
				cancel()
			}
		}
		select {
		case free <- batch[:0]:
		default:
		}
	}
	if err := <-errc; derr == nil {
		derr = err
	}
	return derr
}

// builtinChains are each iptables table's hooks.
var builtinChains = map[string][]nftChainInfo{
	"filter":   {{"INPUT", true, 1, "ACCEPT"}, {"FORWARD", true, 2, "ACCEPT"}, {"OUTPUT", true, 3, "ACCEPT"}},
	"nat":      {{"PREROUTING", true, 0, "ACCEPT"}, {"INPUT", true, 1, "ACCEPT"}, {"OUTPUT", true, 3, "ACCEPT"}, {"POSTROUTING", true, 4, "ACCEPT"}},
	"mangle":   {{"PREROUTING", true, 0, "ACCEPT"}, {"INPUT", true, 1, "ACCEPT"}, {"FORWARD", true, 2, "ACCEPT"}, {"OUTPUT", true, 3, "ACCEPT"}, {"POSTROUTING", true, 4, "ACCEPT"}},
	"raw":      {{"PREROUTING", true, 0, "ACCEPT"}, {"OUTPUT", true, 3, "ACCEPT"}},
	"security": {{"INPUT", true, 1, "ACCEPT"}, {"FORWARD", true, 2, "ACCEPT"}, {"OUTPUT", true, 3, "ACCEPT"}},
}
