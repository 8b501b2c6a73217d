package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/node-doctor/node-doctor/pkg/dataplane"
	"github.com/node-doctor/node-doctor/pkg/explain"
	"github.com/node-doctor/node-doctor/pkg/kube"
	"github.com/node-doctor/node-doctor/pkg/kubeproxy"
)

func newExplainCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "explain",
		Short: "One Service's path on this node rule by rule, or one pod as the runtime has it",
		Long: `Explain what this node does with one object, hop by hop, against what the
Kubernetes API says, and what to fix. Only reads.

Exit code: 0 the path works, 1 it is broken on this node, 2 node-doctor
could not explain it (bad name, no cluster access, no rules to read).`,
	}
	cmd.AddCommand(newExplainServiceCommand(g), newExplainPodCommand(g))
	return cmd
}

func newExplainServiceCommand(g *globals) *cobra.Command {
	var output, color string
	var kf checkFlags
	cmd := &cobra.Command{
		Use:   "service NAMESPACE/NAME[:PORT]",
		Short: "kube-proxy's rules on this node for one Service, hop by hop",
		Long: `Walk kube-proxy's rules on this node for one Service in the mode kube-proxy
runs: iptables (KUBE-SERVICES -> KUBE-SVC-... -> KUBE-SEP-... with each
endpoint's probability and DNAT target, NodePorts and external IPs through
KUBE-EXT-...), nftables (the service-ips and service-nodeports map elements,
the service and endpoint chains) or IPVS (virtual and real servers). Every hop
is set against the Service and its EndpointSlices in the API and marked ok,
missing, stale or wrong, with the fix: an annotated 'iptables-save | grep',
'nft list table ip kube-proxy' or 'ipvsadm -ln' that needs no grep.

The verdicts are those of the kube-proxy-rules check, read at one instant: a
Service that changed in the last seconds may not be synced by kube-proxy yet.
Needs the API (--kubeconfig, or in-cluster config) and, like the check, root
or CAP_NET_ADMIN to read the rules.`,
		Example: `  node-doctor explain service default/kubernetes
  node-doctor explain service kube-system/kube-dns:dns-tcp
  node-doctor explain service shop/web:8080 -o json | jq '.ports[].problems'`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			fail := func(err error) error { return &exitError{ExitFailure, err} }
			if err := checkOutput(output, color); err != nil {
				return fail(err)
			}
			ns, name, port, err := parseServiceRef(args[0])
			if err != nil {
				return fail(err)
			}
			s, err := g.setup(&kf, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), time.Minute)
			defer cancel()
			cs, node, err := explainClient(s)
			if err != nil {
				return fail(err)
			}
			svc, err := cs.Services(ns).Get(ctx, name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return fail(fmt.Errorf("no Service %s/%s in the API", ns, name))
			}
			if err != nil {
				return fail(fmt.Errorf("get Service %s/%s: %w", ns, name, err))
			}
			sl, err := cs.EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + name})
			if err != nil {
				return fail(fmt.Errorf("list EndpointSlices of %s/%s: %w", ns, name, err))
			}
			slices := make([]*discoveryv1.EndpointSlice, 0, len(sl.Items))
			for i := range sl.Items {
				slices = append(slices, &sl.Items[i])
			}
			// The zone drives topology hints; a missing Node means no zone.
			var nodeObj *corev1.Node
			if n, err := cs.Nodes().Get(ctx, node, metav1.GetOptions{}); err == nil {
				nodeObj = n
			}
			deps := kubeproxy.KubeProxyDeps{IPTables: iptablesReader(s.cfg.DataplaneReader), NFT: nftReader(s.cfg.DataplaneReader), IPVS: dataplane.MobyIPVS{}}
			path, err := kubeproxy.ExplainService(ctx, deps, kubeProxySettings(s), svc, slices, nodeObj, node, port)
			if err != nil {
				return fail(err)
			}
			out := cmd.OutOrStdout()
			err = writeExplained(output, out, path, func() error { return explain.WriteServicePath(out, path, useColor(color, out)) })
			if err != nil {
				return fail(fmt.Errorf("write: %w", err))
			}
			if path.Broken() {
				return &exitError{ExitProblems, nil}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&output, "output", "o", "table", "output format: table, json or yaml")
	f.StringVar(&color, "color", "auto", "colour the table: auto (only on a terminal, and not when NO_COLOR is set), always or never")
	stringFlag(f, &kf.kubeconfig, "kubeconfig", "", "kubeconfig to read the Service, its EndpointSlices and this Node with (default: in-cluster config when in a pod)")
	stringFlag(f, &kf.nodeName, "node-name", "", "this node's name in Kubernetes, for topology hints and Local traffic policies (default: $NODE_NAME, then the hostname)")
	return cmd
}

// writeExplained writes v as JSON or YAML, or as the table table writes.
func writeExplained(output string, w io.Writer, v any, table func() error) error {
	switch output {
	case "json":
		return explain.WriteJSON(w, v)
	case "yaml":
		return explain.WriteYAML(w, v)
	}
	return table()
}

// checkOutput validates the --output and --color flags of check and explain.
func checkOutput(output, color string) error {
	switch output {
	case "table", "json", "yaml":
	default:
		return fmt.Errorf("--output %q is not one of table, json, yaml", output)
	}
	switch color {
	case "auto", "always", "never":
	default:
		return fmt.Errorf("--color %q is not one of auto, always, never", color)
	}
	return nil
}

// parseServiceRef reads NAMESPACE/NAME[:PORT].
func parseServiceRef(ref string) (ns, name, port string, err error) {
	ns, rest, ok := strings.Cut(ref, "/")
	if !ok || ns == "" || rest == "" {
		return "", "", "", fmt.Errorf("%q is not NAMESPACE/NAME[:PORT] (e.g. default/kubernetes:https)", ref)
	}
	name, port, _ = strings.Cut(rest, ":")
	if name == "" || strings.Contains(name, "/") {
		return "", "", "", fmt.Errorf("%q is not NAMESPACE/NAME[:PORT] (e.g. default/kubernetes:https)", ref)
	}
	return ns, name, port, nil
}

// explainClient is a client for a few reads, and the node's name.
func explainClient(s *setup) (kube.Interface, string, error) {
	c, err := kube.Connect(kube.ConnectOptions{
		ClientOptions: kube.ClientOptions{Kubeconfig: s.cfg.Kubeconfig, QPS: 20, Burst: 40, UserAgent: "node-doctor/" + versionString()},
		NodeName:      s.cfg.NodeName,
	})
	if errors.Is(err, kube.ErrNoCluster) {
		return nil, "", fmt.Errorf("explain reads the Service from the API: %w", err)
	}
	if err != nil {
		return nil, "", err
	}
	return c.Client, c.Node, nil
}

// kubeProxySettings are the kube-proxy-rules check's settings from the
// config (kube-proxy's addresses, a forced mode).
func kubeProxySettings(s *setup) *kubeproxy.KubeProxySettings {
	for _, d := range s.all {
		if ks, ok := d.Settings.(*kubeproxy.KubeProxySettings); ok && d.Name == "kube-proxy-rules" {
			return ks
		}
	}
	return nil
}
