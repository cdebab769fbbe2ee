#!/usr/bin/env bash
# `make edge [TARGET=...]`: cross-builds lkd-run for TARGET against glibc 2.28 symbols
# (cargo-zigbuild), then assembles the bundle with scripts/edge_bundle.sh:
#   x86_64-unknown-linux-gnu  -> dist/lkd-edge/         (+ .tar.gz), ONNX Runtime from the venv
#   aarch64-unknown-linux-gnu -> dist/lkd-edge-aarch64/ (+ .tar.gz), ONNX Runtime from the aarch64 wheel
# Builds go to target/edge/ (aarch64) and target/edge-x86_64/, not the host's target/: zig links
# host build scripts too when the target is the host's triple. Cargo is incremental, and the
# bundle is only re-assembled when the binary, the library or the scripts are newer than it.
# Usage: scripts/build_edge.sh TARGET   (run through make: it needs ORT_DYLIB_PATH from env.mk)
set -euo pipefail
GLIBC_FLOOR=2.28
target=${1:?usage: $0 x86_64-unknown-linux-gnu|aarch64-unknown-linux-gnu}
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

edge_mk=$(bash scripts/bootstrap_aarch64.sh)
eval "$(sed -n 's/^export \([A-Z0-9_]*\) := \(.*\)$/\1="\2"/p' "$edge_mk")"

case $target in
    x86_64-unknown-linux-gnu)
        lib=${ORT_DYLIB_PATH:?ORT_DYLIB_PATH is not set: run this through make (make edge)}
        out=dist/lkd-edge ;;
    aarch64-unknown-linux-gnu)
        lib=$LKD_ORT_AARCH64_LIB
        out=dist/lkd-edge-aarch64 ;;
    *)
        echo "error: TARGET must be x86_64-unknown-linux-gnu or aarch64-unknown-linux-gnu, found $target" >&2
        exit 2 ;;
esac

if [[ $target == aarch64-* ]]; then export CARGO_TARGET_DIR=$here/target/edge; else export CARGO_TARGET_DIR=$here/target/edge-x86_64; fi
PATH=$LKD_ZIG_BIN:$PATH cargo-zigbuild zigbuild --release --target "$target.$GLIBC_FLOOR" \
    -p lkd-runtime --bin lkd-run
bin=$CARGO_TARGET_DIR/$target/release/lkd-run

fresh=1
for f in "$bin" "$lib" scripts/edge_bundle.sh scripts/device-check.sh; do
    [[ $out/lkd-run -nt $f ]] || fresh=0
done
[[ -f $out.tar.gz ]] || fresh=0
if [[ $fresh == 1 ]]; then
    echo "$out is up to date"
else
    mkdir -p "$(dirname "$out")"
    bash scripts/edge_bundle.sh "$bin" "$lib" "$out"
fi
