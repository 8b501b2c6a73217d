#!/bin/sh
# rootfs.sh DEST — copy the host tools node-doctor's image carries into DEST:
# iptables in both backends (xtables-legacy-multi, xtables-nft-multi and
# every iptables/ip6tables name pointing at them), their extensions, nft, the
# shared libraries all of those load (ldd), and the few /etc files they read.
# Nothing else: no shell, no package manager.
#
# The Dockerfile runs it in a Debian stage with iptables and nftables
# installed; the e2e harness (test/harness/agent_image.go) runs the same
# script on the test machine, so both images hold the same files.
set -eu

dest=${1:?usage: rootfs.sh DEST}
mkdir -p "$dest"

legacy=/usr/sbin/xtables-legacy-multi
nftmulti=/usr/sbin/xtables-nft-multi
nft=/usr/sbin/nft
for f in "$legacy" "$nftmulti" "$nft"; do
	[ -x "$f" ] || { echo "rootfs.sh: $f missing (packages iptables, nftables)" >&2; exit 1; }
done

# The multiarch library dir, from where libxtables lives (e.g. x86_64-linux-gnu).
libxtables=$(ldd "$nftmulti" | awk '$1 ~ /^libxtables\.so/ {print $3}')
[ -n "$libxtables" ] || { echo "rootfs.sh: cannot find libxtables of $nftmulti" >&2; exit 1; }
triplet=$(basename "$(dirname "$libxtables")")
extdir=/usr/lib/$triplet/xtables
[ -d "$extdir" ] || { echo "rootfs.sh: no iptables extensions in $extdir" >&2; exit 1; }

copy() { # copy file $1 (resolving symlinks) to the same path under $dest
	mkdir -p "$dest$(dirname "$1")"
	cp -L "$1" "$dest$1"
}

copy "$legacy"
copy "$nftmulti"
copy "$nft"
mkdir -p "$dest$extdir"
for so in "$extdir"/*.so; do
	copy "$so"
done

# The names the multi-call binaries answer to. Plain iptables/ip6tables
# follow Debian's default (nft); node-doctor calls the backend it reads by
# its explicit name.
cd "$dest/usr/sbin"
for fam in iptables ip6tables; do
	for suffix in "" -save -restore; do
		ln -sf xtables-legacy-multi "$fam-legacy$suffix"
		ln -sf xtables-nft-multi "$fam-nft$suffix"
		ln -sf xtables-nft-multi "$fam$suffix"
	done
done
cd - >/dev/null

# Every shared library the binaries and the extensions they dlopen need, and
# the dynamic loader itself, at the paths ldd names.
for f in "$legacy" "$nftmulti" "$nft" "$extdir"/*.so; do
	ldd "$f" | awk '/=> \// {print $3} /^[[:space:]]*\// {print $1}'
done | sort -u | while read -r lib; do
	copy "$lib"
done

# Protocol, service and ethertype names iptables-save and nft print.
for f in /etc/protocols /etc/services /etc/ethertypes; do
	[ -f "$f" ] && copy "$f"
done
mkdir -p "$dest/etc" "$dest/tmp" "$dest/run"
chmod 1777 "$dest/tmp"
printf 'hosts: files\nprotocols: files\nservices: files\n' >"$dest/etc/nsswitch.conf"
printf 'root:x:0:0:root:/:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/:/usr/sbin/nologin\n' >"$dest/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$dest/etc/group"
