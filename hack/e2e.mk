# Real-node end-to-end targets. Included by the main Makefile.
# Everything built or cached goes under _output/ (git-ignored).

E2E_TIMEOUT    ?= 60m
E2E_PROXY_MODE ?= iptables
E2E_RUN        ?= .
E2E_GO         ?= $(if $(GO),$(GO),go)

.PHONY: kube-bins prometheus-bins node-deps cluster-up cluster-down e2e

kube-bins: ## build the pinned kube-apiserver/controller-manager/kubelet/kube-proxy into _output/kube/<version>/bin (cached)
	hack/kube/build.sh

prometheus-bins: ## build the pinned prometheus and promtool (with Kubernetes service discovery) into _output/prometheus/<version>/bin (cached)
	hack/prometheus/build.sh

node-deps: ## install the Debian packages the real-node harness needs (containerd, runc, CNI, etcd, iptables, nftables...)
	hack/install-node-deps.sh

cluster-up: node-deps kube-bins ## start a single-node cluster and leave it running (E2E_PROXY_MODE=iptables|nftables); prints KUBECONFIG
	NODE_DOCTOR_KUBE_BIN_DIR="$$(hack/kube/build.sh print-bin-dir)" \
		$(E2E_GO) run ./test/harness/cmd/nd-node up -proxy-mode $(E2E_PROXY_MODE)

cluster-down: ## tear down the node cluster-up started: processes, mounts, cni0, kube-proxy rules, addresses, sysctls
	$(E2E_GO) run ./test/harness/cmd/nd-node down

e2e: node-deps kube-bins prometheus-bins ## run the real-node e2e suite in iptables and nftables mode (root; builds everything it needs)
	NODE_DOCTOR_KUBE_BIN_DIR="$$(hack/kube/build.sh print-bin-dir)" \
		NODE_DOCTOR_PROMETHEUS="$$(hack/prometheus/build.sh print-bin)" \
		NODE_DOCTOR_PROMTOOL="$$(hack/prometheus/build.sh print-promtool)" \
		$(E2E_GO) test -tags e2e ./test/e2e/... -v -count=1 -run '$(E2E_RUN)' -timeout $(E2E_TIMEOUT)
