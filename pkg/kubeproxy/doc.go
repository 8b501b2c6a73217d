// Package kubeproxy verifies kube-proxy's rules on this node against the
// Services and EndpointSlices in the API: the desired state, kube-proxy's
// chain names, the comparison for each mode (iptables, nftables, IPVS),
// explain's rule-by-rule path walk, and kube-proxy's own HTTP API.
//
// It is a top-level package, not under pkg/netcheck, because it is not a
// check: the kube-proxy checks in pkg/netcheck, `explain service` in
// pkg/app and the e2e tests all use it, and it depends only on
// pkg/dataplane (which reads the tables) and pkg/check's types.
package kubeproxy
