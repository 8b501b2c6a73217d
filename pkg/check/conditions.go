package check

// Node condition types node-doctor owns. A condition is True while the
// problem is present. Kubelet's own types are never written.
const (
	ConditionNetworkConfig = "NetworkConfigProblem"
)
