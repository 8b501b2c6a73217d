package harness

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
)

// StartContainerd runs containerd alone, without Kubernetes, for CRI tests:
// same config, bridge network and images as the node's. Stop it with
// (*Containerd).Stop; like Start, it refuses to run next to a live node.
func StartContainerd(ctx context.Context, log *slog.Logger, opts ContainerdOptions) (*Containerd, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("harness: must run as root")
	}
	if err := recoverStale(ctx, log); err != nil {
		return nil, err
	}
	if opts.PodCIDR == "" {
		opts.PodCIDR = defaultPodCIDR
	}
	if opts.Dir == "" {
		d, err := os.MkdirTemp("", "nd-containerd-")
		if err != nil {
			return nil, fmt.Errorf("harness: work dir: %w", err)
		}
		opts.Dir = d
	}
	wd, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("harness: work dir: %w", err)
	}
	if err := claim(wd); err != nil {
		_ = os.Remove(wd) // only if empty: nothing was started
		return nil, err
	}
	if err := checkRanges(ctx, opts.PodCIDR); err != nil {
		release(wd)
		return nil, fmt.Errorf("harness: %w", err)
	}
	if linkExists(BridgeName) {
		release(wd)
		return nil, fmt.Errorf("harness: link %s already exists; refusing to share it", BridgeName)
	}
	st := &State{
		WorkDir: wd, PodCIDR: opts.PodCIDR, Sysctls: readSysctls(), Preexisting: map[string]bool{}, Owner: currentOwner(),
		NetnsBefore: dirEntries("/var/run/netns"), ChainsBefore: iptablesChains(ctx), NftBefore: nftTables(ctx),
	}
	for _, p := range hostPaths {
		st.Preexisting[p] = pathExists(p)
	}
	for _, cg := range cgroupDirs() {
		st.Preexisting[cg] = true
	}
	if err := os.MkdirAll(wd, 0o755); err != nil {
		release(wd)
		return nil, fmt.Errorf("harness: work dir: %w", err)
	}
	if err := st.save(); err != nil {
		release(wd)
		return nil, err
	}
	if err := confinePods(ctx, st, opts.PodCIDR); err != nil {
		if terr := Teardown(context.WithoutCancel(ctx), log, st, true); terr != nil {
			log.Error("teardown after failed start", "err", terr)
		}
		return nil, fmt.Errorf("harness: %w", err)
	}
	opts.Dir = filepath.Join(wd, "containerd")
	c, err := startContainerdState(ctx, log, st, opts)
	if err != nil {
		if terr := Teardown(context.WithoutCancel(ctx), log, st, true); terr != nil {
			log.Error("teardown after failed start", "err", terr)
		}
		return nil, fmt.Errorf("harness: start containerd (logs kept in %s): %w", wd, err)
	}
	c.state = st
	return c, nil
}

// Stop tears down a containerd started by StartContainerd, including its
// sandboxes, shims, mounts and cni0.
func (c *Containerd) Stop(ctx context.Context, keepWorkDir bool) error {
	if c == nil || c.state == nil {
		return errors.New("harness: containerd not started by StartContainerd; stop the Cluster instead")
	}
	return Teardown(ctx, slog.Default(), c.state, keepWorkDir)
}
