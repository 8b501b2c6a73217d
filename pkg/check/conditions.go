package check

// Node condition types node-doctor owns. A condition is True while the
// problem is present. Kubelet's own types are never written.
const (
	ConditionNetworkConfig = "NetworkConfigProblem"
	// ConditionContainerRuntime: the CRI runtime is unreachable, hung, not
	// ready, or cannot start sandboxes.
	ConditionContainerRuntime = "ContainerRuntimeProblem"
	// ConditionKubeProxyRules: kube-proxy's rules on the node differ from the
	// API, kube-proxy is unhealthy, or its rules sit in the wrong backend.
	ConditionKubeProxyRules = "KubeProxyRulesProblem"
	// ConditionConntrack: the conntrack table is (nearly) full or dropping.
	ConditionConntrack = "ConntrackProblem"
	// ConditionKubeletUnhealthy: the kubelet is gone, stopped, failing
	// healthz, not renewing its Lease or reporting PLEG unhealthy; named as
	// NPD's health-checker names it.
	ConditionKubeletUnhealthy = "KubeletUnhealthy"
	// ConditionClusterDNS: the DNS the kubelet hands to this node's pods is
	// not served (no Service or no ready endpoint behind clusterDNS, nothing
	// listening on a node-local address) or its resolvConf loops back.
	ConditionClusterDNS = "ClusterDNSUnavailable"
)

// Node condition types the kernel log drives, named as node-problem-detector
// names them so that existing alerts keep working.
const (
	ConditionKernelDeadlock              = "KernelDeadlock"
	ConditionReadonlyFilesystem          = "ReadonlyFilesystem"
	ConditionFrequentUnregisterNetDevice = "FrequentUnregisterNetDevice"
)
