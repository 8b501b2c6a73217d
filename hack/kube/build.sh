#!/usr/bin/env bash
# Builds the pinned Kubernetes node components from the Go module proxy into
# _output/kube/<version>/bin, reusing that directory when nothing changed.
#
#   hack/kube/build.sh                 build (or reuse) the pinned version
#   hack/kube/build.sh print-bin-dir   print the bin directory for the pinned version
#   hack/kube/build.sh set-version vX.Y.Z   re-pin go.mod/go.sum to another release
#
# The only place the version is written is the `require k8s.io/kubernetes` line
# of hack/kube/go.mod; the staging replaces are derived from it by set-version.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "${here}/../.." && pwd)"
# Test fixtures, not shipped: built with the machine's own Go so the cache survives
# the agent's toolchain pin (GOTOOLCHAIN in the Makefile).
export GOTOOLCHAIN=local
export GOWORK=off GOFLAGS="${GOFLAGS:-} -buildvcs=false"
export CGO_ENABLED="${CGO_ENABLED:-0}"

binaries=(kube-apiserver kube-controller-manager kubelet kube-proxy)

kube_version() {
	(cd "${here}" && go list -m -f '{{.Version}}' k8s.io/kubernetes)
}

# v1.37.2 -> v0.37.2: staging modules are published with major version 0.
staging_version() {
	echo "v0.${1#v1.}"
}

check_pins() {
	local want bad
	want="$(staging_version "$1")"
	# Replace lines look like: k8s.io/api => k8s.io/api v0.37.2
	bad="$(awk -v w="${want}" '$2 == "=>" && $1 ~ /^k8s\.io\// && $4 != w' "${here}/go.mod")"
	[[ -z "${bad}" ]] || {
		echo "hack/kube/go.mod: staging replaces do not match ${1} (want ${want}):" >&2
		echo "${bad}" >&2
		echo "run: hack/kube/build.sh set-version ${1}" >&2
		exit 1
	}
}

set_version() {
	local v="$1" sv mod
	[[ "${v}" =~ ^v1\.[0-9]+\.[0-9]+$ ]] || { echo "set-version: want v1.Y.Z, got ${v}" >&2; exit 1; }
	sv="$(staging_version "${v}")"
	cd "${here}"
	go mod edit -require="k8s.io/kubernetes@${v}"
	# Every staging module is a replace => ./staging/... in k8s.io/kubernetes' go.mod.
	mod="$(go mod download -json "k8s.io/kubernetes@${v}" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
	for m in $(awk '/=> \.\/staging/ {print $1}' "${mod}"); do
		go mod edit -replace="${m}=${m}@${sv}"
	done
	go mod tidy
	echo "pinned k8s.io/kubernetes ${v} (staging ${sv})"
}

build() {
	local v out bin stamp want
	v="$(kube_version)"
	check_pins "${v}"
	out="${root}/_output/kube/${v}"
	bin="${out}/bin"
	stamp="${out}/.stamp"
	# The stamp covers the exact dependency set and toolchain, so a changed
	# go.sum or Go version rebuilds even when the Kubernetes version did not move.
	want="$(cat "${here}/go.mod" "${here}/go.sum" | sha256sum | cut -d' ' -f1) $(go env GOVERSION)"
	local have=1
	for b in "${binaries[@]}"; do [[ -x "${bin}/${b}" ]] || have=0; done
	if [[ ${have} == 1 && -f "${stamp}" && "$(cat "${stamp}")" == "${want}" ]]; then
		echo "kube ${v}: reusing ${bin}"
		return
	fi
	mkdir -p "${bin}"
	rm -f "${stamp}"
	local pkgs=()
	for b in "${binaries[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/${b}"); done
	echo "kube ${v}: building ${binaries[*]} into ${bin} (first build takes ~10 min)"
	local start=${SECONDS}
	(cd "${here}" && go build -trimpath -o "${bin}/" \
		-ldflags "-s -w -X k8s.io/component-base/version.gitVersion=${v}" "${pkgs[@]}")
	echo "${want}" > "${stamp}"
	echo "kube ${v}: built in $((SECONDS - start))s"
}

case "${1:-build}" in
	build) build ;;
	print-bin-dir) echo "${root}/_output/kube/$(kube_version)/bin" ;;
	set-version) set_version "${2:?usage: build.sh set-version vX.Y.Z}" ;;
	*) echo "usage: $0 [build|print-bin-dir|set-version vX.Y.Z]" >&2; exit 2 ;;
esac
