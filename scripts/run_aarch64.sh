#!/usr/bin/env bash
# Runs an aarch64 Linux program on an x86_64 machine under qemu-user, for the emulated tests of
# dist/lkd-edge-aarch64. ONNX Runtime's CPU detection parses /proc/cpuinfo, which qemu-user 7.2
# passes through from the x86 host, and crashes on it; so the program sees an ARM one (a
# Cortex-A76 entry per host core) bind-mounted in a private mount namespace. Nothing outside
# this process changes. Emulated timings say nothing about a real board.
# Usage: scripts/run_aarch64.sh PROGRAM [ARGS...]   (needs qemu-user, libc6-arm64-cross: make edge)
set -euo pipefail
if [[ $# -lt 1 ]]; then
    echo "usage: $0 PROGRAM [ARGS...]" >&2
    exit 2
fi
sysroot=${LKD_AARCH64_SYSROOT:-/usr/aarch64-linux-gnu}
command -v unshare >/dev/null || { echo "error: unshare (util-linux) is missing" >&2; exit 127; }
command -v qemu-aarch64 >/dev/null || { echo "error: qemu-aarch64 is missing (Debian package qemu-user; scripts/bootstrap_aarch64.sh installs it)" >&2; exit 127; }
[[ -e $sysroot/lib/ld-linux-aarch64.so.1 ]] || { echo "error: $sysroot/lib/ld-linux-aarch64.so.1 is missing (Debian package libc6-arm64-cross; scripts/bootstrap_aarch64.sh installs it)" >&2; exit 127; }

cpuinfo=$(mktemp "${TMPDIR:-/tmp}/cpuinfo-arm64.XXXXXX")
for ((i = 0; i < $(nproc); i++)); do
    cat >> "$cpuinfo" <<CPU
processor	: $i
BogoMIPS	: 50.00
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcp dcpop asimddp
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x4
CPU part	: 0xd0b
CPU revision	: 1

CPU
done

# Root mounts in its own namespace; anyone else in a user namespace mapped to root (the mount
# then needs unprivileged user namespaces).
if [[ $(id -u) == 0 ]]; then ns=(--mount); else ns=(--user --map-root-user --mount); fi
# exec all the way down: the caller's child process is qemu itself (signals reach the program).
export QEMU_LD_PREFIX=$sysroot
# The bind mount keeps the file alive, so it is deleted before qemu starts.
exec unshare "${ns[@]}" -- bash -c '
    mount --bind "$1" /proc/cpuinfo || { rm -f "$1"; echo "error: cannot bind an ARM cpuinfo over /proc/cpuinfo in a private mount namespace (needs root or unprivileged user namespaces)" >&2; exit 126; }
    rm -f "$1"; shift; exec qemu-aarch64 "$@"' run_aarch64 "$cpuinfo" "$@"
