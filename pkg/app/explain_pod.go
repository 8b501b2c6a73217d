package app

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/node-doctor/node-doctor/pkg/check"
	"github.com/node-doctor/node-doctor/pkg/cri"
	"github.com/node-doctor/node-doctor/pkg/explain"
	"github.com/node-doctor/node-doctor/pkg/kube"
)

func newExplainPodCommand(g *globals) *cobra.Command {
	var output, color string
	var kf checkFlags
	cmd := &cobra.Command{
		Use:   "pod NAMESPACE/NAME",
		Short: "One pod on this node as the runtime has it: sandbox, containers, last log lines, findings",
		Long: `Show one pod on this node the way 'crictl inspectp', 'crictl ps -a' and
'crictl logs --tail' would, annotated: each sandbox's state, IP and the DNS
config the runtime wrote for it; each container's state, attempt, exit code
and reason (OOMKilled included) and its last log lines; and every current
finding about the pod from the runtime and kernel-log checks (crash loops,
OOM kills from the kernel log, stuck containers...). Only reads.

The pod must have a sandbox on this node. The API is used when configured
(--kubeconfig, or in-cluster config) so that the checks know which pods are
being deleted or replaced, as they do in 'check'.`,
		Example: `  node-doctor explain pod kube-system/coredns-5d78c9869d-8xq2l
  node-doctor explain pod shop/web-0 -o yaml`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			fail := func(err error) error { return &exitError{ExitFailure, err} }
			if err := checkOutput(output, color); err != nil {
				return fail(err)
			}
			ns, name, ok := strings.Cut(args[0], "/")
			if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
				return fail(fmt.Errorf("%q is not NAMESPACE/NAME", args[0]))
			}
			s, err := g.setup(&kf, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Minute)
			defer cancel()
			node, nodeErr := kube.NodeName(s.cfg.NodeName, os.Getenv, os.Hostname)
			stop := connectOnce(ctx, s)
			var defs []*check.Definition
			for _, d := range s.defs {
				if d.Area == cri.Area || d.Area == "kernel" {
					defs = append(defs, d)
				}
			}
			results := check.NewRunner(defs, nil, nil).RunOnce(ctx)
			stop()
			var findings []check.Finding
			for _, r := range results {
				findings = append(findings, r.Findings...)
			}
			snap, err := s.criSource.Snapshot(ctx)
			if err != nil {
				return fail(fmt.Errorf("explain reads the pod from the container runtime: %w", err))
			}
			p, found := cri.ExplainPod(ctx, snap, s.criClient, s.hostFS, ns, name, findings)
			if nodeErr == nil {
				p.Node = node
			}
			if !found {
				return fail(fmt.Errorf("pod %s/%s has no sandbox on this node (runtime %s): 'kubectl get pod -n %s %s -o wide' says which node runs it", ns, name, snap.Endpoint, ns, name))
			}
			out := cmd.OutOrStdout()
			err = writeExplained(output, out, p, func() error { return explain.WritePod(out, p, useColor(color, out)) })
			if err != nil {
				return fail(fmt.Errorf("write: %w", err))
			}
			if p.Broken() {
				return &exitError{ExitProblems, nil}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&output, "output", "o", "table", "output format: table, json or yaml")
	f.StringVar(&color, "color", "auto", "colour the table: auto (only on a terminal, and not when NO_COLOR is set), always or never")
	stringFlag(f, &kf.kubeconfig, "kubeconfig", "", "kubeconfig to read this node's pods with, only reading (default: in-cluster config when in a pod; none: the runtime alone)")
	stringFlag(f, &kf.nodeName, "node-name", "", "this node's name in Kubernetes (default: $NODE_NAME, then the hostname)")
	return cmd
}
