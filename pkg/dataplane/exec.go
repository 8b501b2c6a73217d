package dataplane

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"
)

// IPTables backends.
const (
	BackendNFT    = "nft"
	BackendLegacy = "legacy"
)

// IPTablesSaver runs iptables-save for one table of one backend and parses
// the output into into as it streams.
type IPTablesSaver interface {
	Save(ctx context.Context, backend string, ipv6 bool, table string, into *IPTables) error
}

// NFTLister reads one nftables table into into (over netlink, or nft -j
// parsed as it streams); ok is false when the table does not exist.
type NFTLister interface {
	ListTable(ctx context.Context, family, table string, into *NFTTable) (ok bool, err error)
}

// ExecIPTablesSaver runs iptables-legacy-save / iptables-nft-save (and the
// ip6 variants) from PATH, streaming into the parser.
type ExecIPTablesSaver struct {
	// Prefix runs the tools through another command (tests: ip netns exec NS).
	Prefix []string
}

// Save runs one iptables-save for one table.
func (e ExecIPTablesSaver) Save(ctx context.Context, backend string, ipv6 bool, table string, into *IPTables) error {
	bin := "iptables-" + backend + "-save"
	if ipv6 {
		bin = "ip6tables-" + backend + "-save"
	}
	if backend == BackendLegacy && len(e.Prefix) == 0 && !legacyTableLoaded(ipv6, table) {
		// Asking the kernel for a legacy table it does not have loads its
		// module and creates it; read only the ones that exist.
		return nil
	}
	args := append(append([]string{}, e.Prefix...), bin, "-t", table)
	cmd := readerCommand(ctx, args[0], args[1:]...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("%s: %w", bin, err)
	}
	if err := cmd.Start(); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return notOnPath(args[0], backend == BackendNFT, err)
		}
		return fmt.Errorf("%s: %w", bin, err)
	}
	defer closeOnDone(ctx, out)()
	perr := ParseIPTablesSaveInto(out, into)
	if perr != nil {
		_, _ = io.Copy(io.Discard, out)
	}
	if err := cmd.Wait(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		// A table that was never created (legacy backend, module not loaded)
		// is empty, not an error.
		if strings.Contains(msg, "does not exist") || strings.Contains(msg, "Table does not exist") {
			return nil
		}
		return fmt.Errorf("%s -t %s: %w: %s", bin, table, err, msg)
	}
	return perr
}

// legacyTableLoaded says the legacy table exists in this network namespace,
// from /proc/net/ip_tables_names (what iptables-legacy-save itself reads).
func legacyTableLoaded(ipv6 bool, table string) bool {
	names := "/proc/self/net/ip_tables_names"
	if ipv6 {
		names = "/proc/self/net/ip6_tables_names"
	}
	b, err := os.ReadFile(names)
	if err != nil {
		return false
	}
	for _, n := range strings.Fields(string(b)) {
		if n == table {
			return true
		}
	}
	return false
}

// ExecNFT runs nft -j.
type ExecNFT struct {
	// Prefix runs nft through another command (tests: ip netns exec NS).
	Prefix []string
}

// ListTable runs `nft -j list table FAMILY TABLE`, streaming into the parser.
func (e ExecNFT) ListTable(ctx context.Context, family, table string, into *NFTTable) (bool, error) {
	args := append(append([]string{}, e.Prefix...), "nft", "-j", "list", "table", family, table)
	cmd := readerCommand(ctx, args[0], args[1:]...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return false, fmt.Errorf("nft: %w", err)
	}
	if err := cmd.Start(); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return false, notOnPath(args[0], true, err)
		}
		return false, fmt.Errorf("nft: %w", err)
	}
	defer closeOnDone(ctx, out)()
	// An absent table prints nothing: the parser's error is the exit's.
	perr := ParseNFTJSONInto(out, into)
	_, _ = io.Copy(io.Discard, out)
	if err := cmd.Wait(); err != nil {
		if strings.Contains(stderr.String(), "No such file or directory") {
			return false, nil
		}
		return false, fmt.Errorf("nft list table %s %s: %w: %s", family, table, err, strings.TrimSpace(stderr.String()))
	}
	if perr != nil {
		return false, fmt.Errorf("nft table %s %s: %w", family, table, perr)
	}
	return true, nil
}

// notOnPath says plainly that a reader's tool is missing. The nft backend
// and nftables need one only with dataplane.reader: exec; the legacy
// backend always does. It wraps exec.ErrNotFound.
func notOnPath(bin string, onlyExec bool, err error) error {
	if onlyExec {
		return fmt.Errorf("%s is not on PATH: dataplane.reader: exec reads the tables with it; the default reader, netlink, needs no tool (set dataplane.reader: netlink or install %s): %w", bin, bin, err)
	}
	return fmt.Errorf("%s is not on PATH: the iptables-legacy backend is read with it: %w", bin, err)
}

// readerCommand is a command whose pipes Wait gives up on a second after
// it is killed, even if a child of it still holds them.
func readerCommand(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = time.Second
	return cmd
}

// closeOnDone closes a command's stdout when ctx ends, so a parser blocked
// on a pipe that a leftover child keeps open returns.
func closeOnDone(ctx context.Context, out io.Closer) (stop func() bool) {
	return context.AfterFunc(ctx, func() { _ = out.Close() })
}
