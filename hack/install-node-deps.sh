#!/usr/bin/env bash
# Installs the Debian packages the real-node e2e harness needs. Idempotent:
# does nothing when they are all present, and runs `apt-get update` only when
# a missing package has no install candidate yet (fresh machine, empty lists).
set -euo pipefail

pkgs=(
	containerd runc containernetworking-plugins etcd-server
	iptables nftables conntrack ipvsadm busybox-static iproute2 kmod
)

missing=()
for p in "${pkgs[@]}"; do
	if [[ "$(dpkg-query -W -f='${db:Status-Status}' "${p}" 2>/dev/null)" != installed ]]; then
		missing+=("${p}")
	fi
done
if ((${#missing[@]} == 0)); then
	echo "node deps: all installed"
	exit 0
fi
if ((EUID != 0)); then
	echo "node deps: missing ${missing[*]}; run as root to install them" >&2
	exit 1
fi

export DEBIAN_FRONTEND=noninteractive
for p in "${missing[@]}"; do
	cand="$(apt-cache policy "${p}" 2>/dev/null | awk '/Candidate:/ {print $2}')"
	if [[ -z "${cand}" || "${cand}" == "(none)" ]]; then
		echo "node deps: package lists lack ${p}; running apt-get update"
		apt-get update -q
		break
	fi
done
echo "node deps: installing ${missing[*]}"
# No init system runs here; keep the packaged containerd service from starting.
apt-get install -y -q --no-install-recommends "${missing[@]}"
