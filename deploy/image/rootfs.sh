#!/bin/sh
# rootfs.sh DEST — copy the host tools node-doctor's image carries into DEST:
# only what the iptables-legacy reader runs. The iptables-nft backend and
# kube-proxy's nftables tables are read over nf_tables netlink, conntrack,
# IPVS, links and routes over netlink too, so neither nft nor the nft-backend
# iptables tools are in the image. What is: xtables-legacy-multi as
# iptables-legacy-save and ip6tables-legacy-save, the iptables and ip6tables
# extensions they load to print rules (libxt_*, libipt_*, libip6t_*), the
# shared libraries of those (ldd), and the few /etc files they read.
# Nothing else: no shell, no package manager.
#
# The Dockerfile runs it in a Debian stage with iptables installed; the e2e
# harness (test/harness/agent_image.go) runs the same script on the test
# machine, so both images hold the same files.
set -eu

dest=${1:?usage: rootfs.sh DEST}
mkdir -p "$dest"

legacy=/usr/sbin/xtables-legacy-multi
[ -x "$legacy" ] || { echo "rootfs.sh: $legacy missing (package iptables)" >&2; exit 1; }

# The multiarch library dir, from where libxtables lives (e.g. x86_64-linux-gnu).
libxtables=$(ldd "$legacy" | awk '$1 ~ /^libxtables\.so/ {print $3}')
[ -n "$libxtables" ] || { echo "rootfs.sh: cannot find libxtables of $legacy" >&2; exit 1; }
triplet=$(basename "$(dirname "$libxtables")")
extdir=/usr/lib/$triplet/xtables
[ -d "$extdir" ] || { echo "rootfs.sh: no iptables extensions in $extdir" >&2; exit 1; }

copy() { # copy file $1 (resolving symlinks) to the same path under $dest
	mkdir -p "$dest$(dirname "$1")"
	cp -L "$1" "$dest$1"
}

copy "$legacy"
# iptables-legacy-save loads the extension of each match and target it
# prints; ebtables' and arptables' (libebt_*, libarpt_*) are nft-only.
exts=$(ls "$extdir"/libxt_*.so "$extdir"/libipt_*.so "$extdir"/libip6t_*.so)
mkdir -p "$dest$extdir"
for so in $exts; do
	copy "$so"
done

# The only names node-doctor runs.
ln -sf xtables-legacy-multi "$dest/usr/sbin/iptables-legacy-save"
ln -sf xtables-legacy-multi "$dest/usr/sbin/ip6tables-legacy-save"

# Every shared library the binary and the extensions it dlopens need, and
# the dynamic loader itself, at the paths ldd names.
for f in "$legacy" $exts; do
	ldd "$f" | awk '/=> \// {print $3} /^[[:space:]]*\// {print $1}'
done | sort -u | while read -r lib; do
	copy "$lib"
done

# Protocol names iptables-save prints for protocols it has no built-in name
# for (-p gre, not -p 47).
[ -f /etc/protocols ] && copy /etc/protocols
mkdir -p "$dest/etc" "$dest/tmp" "$dest/run"
chmod 1777 "$dest/tmp"
printf 'hosts: files\nprotocols: files\n' >"$dest/etc/nsswitch.conf"
printf 'root:x:0:0:root:/:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/:/usr/sbin/nologin\n' >"$dest/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$dest/etc/group"
