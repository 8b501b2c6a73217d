// Command nd-node brings the harness's single-node cluster up and down by
// hand (make cluster-up / make cluster-down), and builds its images.
//
//	nd-node up [-proxy-mode iptables|nftables] [-work-dir DIR]
//	nd-node down [-keep] [-work-dir DIR]
//	nd-node images -out DIR
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/node-doctor/node-doctor/test/harness"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(log, os.Args[1:]); err != nil {
		// Printed as is: start errors carry multi-line component log tails.
		fmt.Fprintln(os.Stderr, "nd-node:", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger, args []string) error {
	if len(args) == 0 {
		return errors.New("usage: nd-node up|down|images [flags]")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch args[0] {
	case "up":
		return up(ctx, log, args[1:])
	case "down":
		return down(ctx, log, args[1:])
	case "images":
		return images(args[1:])
	default:
		return fmt.Errorf("unknown command %q: want up, down or images", args[0])
	}
}

func up(ctx context.Context, log *slog.Logger, args []string) error {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	mode := fs.String("proxy-mode", "iptables", "kube-proxy mode: iptables or nftables")
	workDir := fs.String("work-dir", "", "work directory (default <repo>/_output/cluster)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *workDir == "" {
		root, err := harness.RepoRoot()
		if err != nil {
			return err
		}
		*workDir = filepath.Join(root, "_output", "cluster")
	}
	abs, err := filepath.Abs(*workDir)
	if err != nil {
		return fmt.Errorf("work dir: %w", err)
	}
	// A previous node's leftovers are torn down by Start; a stale, inactive
	// work dir from an earlier run is just old logs.
	if harness.ActiveWorkDir() != abs {
		if err := os.RemoveAll(abs); err != nil {
			return fmt.Errorf("clear work dir: %w", err)
		}
	}
	c, err := harness.Start(ctx, log, harness.Options{ProxyMode: *mode, WorkDir: abs, Detached: true})
	if err != nil {
		return err
	}
	fmt.Printf(`
node %s is up (kube-proxy mode %s, node IP %s)

  export KUBECONFIG=%s
  kubectl get nodes -o wide
  kubectl describe node %s
  crictl --runtime-endpoint %s ps -a     # if crictl is installed
  ctr --address %s -n k8s.io images ls

component logs: %s/logs/
pods need spec.nodeName: %s (no scheduler) and image %s
tear down with: make cluster-down
`, c.NodeName, c.ProxyMode, c.NodeIP, c.Kubeconfig, c.NodeName, c.CRIEndpoint, c.Containerd.Address,
		c.WorkDir, c.NodeName, harness.BusyboxImage)
	return nil
}

func down(ctx context.Context, log *slog.Logger, args []string) error {
	fs := flag.NewFlagSet("down", flag.ContinueOnError)
	keep := fs.Bool("keep", false, "keep the work dir (logs, configs)")
	workDir := fs.String("work-dir", "", "work directory of the node to stop (default <repo>/_output/cluster)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *workDir == "" {
		root, err := harness.RepoRoot()
		if err != nil {
			return err
		}
		*workDir = filepath.Join(root, "_output", "cluster")
	}
	abs, err := filepath.Abs(*workDir)
	if err != nil {
		return fmt.Errorf("work dir: %w", err)
	}
	// Only this work dir's node: a test elsewhere may own the active one.
	st, err := harness.LoadState(abs)
	if err != nil {
		if active := harness.ActiveWorkDir(); active != "" && active != abs {
			log.Info("no node from this work dir; another harness node is active, left alone", "work_dir", abs, "active", active)
			return nil
		}
		log.Info("no node is running from this work dir", "work_dir", abs)
		return nil
	}
	return harness.Teardown(context.WithoutCancel(ctx), log, st, *keep)
}

func images(args []string) error {
	fs := flag.NewFlagSet("images", flag.ContinueOnError)
	out := fs.String("out", "", "directory for the OCI image tarballs")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		return errors.New("images: -out is required")
	}
	for _, spec := range harness.DefaultImages() {
		path, err := harness.BuildImage(*out, spec)
		if err != nil {
			return err
		}
		fmt.Println(spec.Ref, path)
	}
	return nil
}
