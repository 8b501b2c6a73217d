package harness

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Teardown undoes everything a node recorded in st: processes, pod
// sandboxes and shims, mounts, network namespaces, cni0 and its veths,
// kube-proxy and kubelet firewall rules, the node address and routes,
// sysctls and cgroups. It keeps going past errors and returns them joined.
// The work dir is removed unless keepWorkDir.
func Teardown(ctx context.Context, log *slog.Logger, st *State, keepWorkDir bool) error {
	start := time.Now()
	var errs []error
	note := func(err error) {
		if err != nil {
			errs = append(errs, err)
			log.Warn("teardown step failed", "err", err)
		}
	}
	stop := func(name string, grace time.Duration) {
		if p := st.proc(name); p != nil {
			p.stop(ctx, log, grace)
		}
	}
	// Stop the node agents first so nothing recreates what is removed below.
	stop("kube-proxy", 10*time.Second)
	stop("kube-controller-manager", 10*time.Second)
	stop("kubelet", 15*time.Second)

	if p := st.proc("containerd"); p != nil && p.Alive() && st.Containerd != "" {
		note(removeAllSandboxes(ctx, "unix://"+st.Containerd))
	}
	stop("containerd", 15*time.Second)
	if st.Containerd != "" {
		if pids := killShims(st.Containerd); len(pids) > 0 {
			log.Info("killed leftover containerd shims", "pids", pids)
		}
	}
	killCgroupProcs(log, st)

	// Only the runtime's pod namespaces (cni-<uuid>): tests may hold
	// namespaces of their own at the same time.
	var newNetns []string
	for _, n := range newEntries(dirEntries("/var/run/netns"), st.NetnsBefore) {
		if strings.HasPrefix(n, "cni-") {
			newNetns = append(newNetns, n)
		}
	}
	var nsPaths []string
	for _, n := range newNetns {
		nsPaths = append(nsPaths, filepath.Join("/run/netns", n), filepath.Join("/var/run/netns", n))
	}
	note(unmountUnder(append([]string{st.WorkDir}, nsPaths...)...))
	for _, n := range newNetns {
		if err := os.Remove(filepath.Join("/var/run/netns", n)); err != nil && !os.IsNotExist(err) {
			note(fmt.Errorf("remove netns %s: %w", n, err))
		}
	}
	note(deleteBridge(ctx, BridgeName))

	if st.KubeProxyUsed {
		// The sweep below removes whatever --cleanup leaves (at 10,000
		// Services it can outlast its timeout) and reports what it cannot.
		if err := kubeProxyCleanup(ctx, st); err != nil {
			log.Warn("kube-proxy --cleanup failed; sweeping its chains instead", "err", err)
		}
	}
	if removed, err := sweepIptables(ctx, st.ChainsBefore); err != nil || len(removed) > 0 {
		note(err)
		if len(removed) > 0 {
			log.Info("removed leftover iptables chains", "chains", removed)
		}
	}
	if removed, err := sweepNft(ctx, st.NftBefore); err != nil || len(removed) > 0 {
		note(err)
		if len(removed) > 0 {
			log.Debug("removed nftables tables", "tables", removed)
		}
	}

	// Control plane last: nothing below needs it.
	for i := len(st.Procs) - 1; i >= 0; i-- {
		st.Procs[i].stop(ctx, log, 10*time.Second)
	}

	for _, r := range st.AddedRoutes {
		args := append([]string{"route", "del"}, strings.Fields(r)...)
		if _, err := run(ctx, "ip", args...); err != nil && !strings.Contains(err.Error(), "No such process") {
			note(err)
		}
	}
	for _, args := range st.Undo {
		// Already gone (a half-finished earlier teardown) is what we want.
		if _, err := run(ctx, "ip", args...); err != nil && !strings.Contains(err.Error(), "No such file or directory") &&
			!strings.Contains(err.Error(), "No such process") {
			note(err)
		}
	}
	if st.AddedAddr && loHasAddr(st.NodeIP) {
		_, err := run(ctx, "ip", "addr", "del", st.NodeIP+"/32", "dev", "lo")
		note(err)
	}
	if changed, err := restoreSysctls(st.Sysctls); err != nil || len(changed) > 0 {
		note(err)
		if len(changed) > 0 {
			log.Info("restored sysctls", "sysctls", changed)
		}
	}
	note(removeCgroups(st))
	note(cleanHostPaths(st))

	release(st.WorkDir)
	if !keepWorkDir {
		if err := os.RemoveAll(st.WorkDir); err != nil {
			note(fmt.Errorf("remove work dir: %w", err))
		}
	}
	log.Info("node torn down", "work_dir", st.WorkDir, "kept", keepWorkDir, "elapsed", time.Since(start).Round(100*time.Millisecond), "errors", len(errs))
	return joinErrs(errs)
}

func newEntries(now, before []string) []string {
	old := map[string]bool{}
	for _, b := range before {
		old[b] = true
	}
	var out []string
	for _, n := range now {
		if !old[n] {
			out = append(out, n)
		}
	}
	return out
}

func kubeProxyCleanup(ctx context.Context, st *State) error {
	bin := filepath.Join(st.KubeBinDir, "kube-proxy")
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("kube-proxy --cleanup: %w", err)
	}
	logPath := filepath.Join(st.WorkDir, "logs", "kube-proxy-cleanup.log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("kube-proxy --cleanup: %w", err)
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--cleanup", "--v=1")
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("kube-proxy --cleanup (see %s): %w", logPath, err)
	}
	return nil
}

// cgroupDirs lists kubelet cgroups present now in every hierarchy.
func cgroupDirs() []string {
	var out []string
	roots := []string{"/sys/fs/cgroup"}
	for _, e := range dirEntries("/sys/fs/cgroup") {
		roots = append(roots, filepath.Join("/sys/fs/cgroup", e))
	}
	for _, r := range roots {
		for _, n := range cgroupNames {
			p := filepath.Join(r, n)
			if fi, err := os.Stat(p); err == nil && fi.IsDir() {
				out = append(out, p)
			}
		}
	}
	return out
}

// walkCgroups visits the cgroup directories below root, deepest first.
func walkCgroups(root string) []string {
	var dirs []string
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	return dirs
}

// killCgroupProcs kills container processes left in the node's cgroups
// (a shim killed above leaves its container running).
func killCgroupProcs(log *slog.Logger, st *State) {
	var pids []int
	for _, cg := range cgroupDirs() {
		if st.Preexisting[cg] {
			continue
		}
		for _, d := range walkCgroups(cg) {
			b, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
			if err != nil {
				continue
			}
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
					_ = syscall.Kill(pid, syscall.SIGKILL)
					pids = append(pids, pid)
				}
			}
		}
	}
	if len(pids) > 0 {
		log.Info("killed leftover container processes", "pids", pids)
		time.Sleep(500 * time.Millisecond)
	}
}

func removeCgroups(st *State) error {
	var errs []error
	for _, cg := range cgroupDirs() {
		if st.Preexisting[cg] {
			continue
		}
		for _, d := range walkCgroups(cg) {
			var err error
			for i := 0; i < 20; i++ {
				if err = syscall.Rmdir(d); err == nil || err == syscall.ENOENT {
					err = nil
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
				break
			}
		}
	}
	return joinErrs(errs)
}

// cleanHostPaths removes shared host paths the node created, or only the
// node's own entries inside ones that existed before.
func cleanHostPaths(st *State) error {
	var errs []error
	if st.Preexisting["/var/log/containers"] {
		for _, n := range dirEntries("/var/log/containers") {
			p := filepath.Join("/var/log/containers", n)
			if t, err := os.Readlink(p); err == nil && strings.HasPrefix(t, st.WorkDir+"/") {
				_ = os.Remove(p)
			}
		}
	}
	if st.Preexisting["/var/lib/cni"] {
		for _, n := range dirEntries("/var/lib/cni/results") {
			if strings.HasPrefix(n, networkName+"-") {
				_ = os.Remove(filepath.Join("/var/lib/cni/results", n))
			}
		}
	}
	for _, p := range hostPaths {
		if st.Preexisting[p] || !pathExists(p) {
			continue
		}
		if p == "/var/run/netns" && len(dirEntries(p)) > 0 {
			continue // someone else's namespaces appeared meanwhile
		}
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", p, err))
		}
	}
	return joinErrs(errs)
}
