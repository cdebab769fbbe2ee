#!/usr/bin/env bash
# Assembles the device bundle: a stripped lkd-run, the ONNX Runtime library it loads from beside
# itself, both licences, device-check.sh and a three-line README, then OUT.tar.gz of it. Written
# to OUT.tmp (and OUT.tar.gz.tmp) and renamed, so OUT is either the old bundle or the complete
# new one. The binary may be x86_64 or aarch64 (stripped with the matching binutils).
# Usage: scripts/edge_bundle.sh LKD_RUN_BINARY LIBONNXRUNTIME_SO OUT_DIR
set -euo pipefail
if [[ $# -ne 3 ]]; then
    echo "usage: $0 LKD_RUN_BINARY LIBONNXRUNTIME_SO OUT_DIR" >&2
    exit 2
fi
bin=$1 lib=$2 out=${3%/}
[[ -x $bin ]] || { echo "error: $bin is not an executable (build it: cargo build --release -p lkd-runtime --bin lkd-run)" >&2; exit 1; }
[[ -f $lib ]] || { echo "error: $lib does not exist (ORT_DYLIB_PATH from make env)" >&2; exit 1; }
ort_pkg=$(dirname "$(dirname "$(readlink -f "$lib")")")   # site-packages/onnxruntime
here=$(cd "$(dirname "$0")/.." && pwd)

machine=$(readelf -h "$bin" | sed -n 's/^ *Machine: *//p')
case $machine in
    AArch64) strip=aarch64-linux-gnu-strip arch=aarch64 ;;
    *X86-64*) strip=strip arch=x86_64 ;;
    *) echo "error: $bin is built for '$machine'; bundles are made for x86_64 or aarch64" >&2; exit 1 ;;
esac
command -v "$strip" >/dev/null || { echo "error: $strip is missing (Debian package binutils-aarch64-linux-gnu; scripts/bootstrap_aarch64.sh installs it)" >&2; exit 1; }

tmp="$out.tmp"
rm -rf "$tmp"
mkdir -p "$tmp"
cp "$bin" "$tmp/lkd-run"
"$strip" --strip-all "$tmp/lkd-run"
install -m 755 "$here/scripts/device-check.sh" "$tmp/device-check.sh"
cp "$(readlink -f "$lib")" "$tmp/$(basename "$(readlink -f "$lib")")"
for f in LICENSE ThirdPartyNotices.txt; do
    [[ -f $ort_pkg/$f ]] || { echo "error: $ort_pkg/$f is missing: the library must come from the onnxruntime wheel" >&2; exit 1; }
    cp "$ort_pkg/$f" "$tmp/onnxruntime-$f"
done
if [[ -f $here/LICENSE ]]; then
    cp "$here/LICENSE" "$tmp/LICENSE"
else
    # The workspace is Apache-2.0 (Cargo.toml); ship the licence text itself.
    cp /usr/share/common-licenses/Apache-2.0 "$tmp/LICENSE"
fi
ver=$(basename "$(readlink -f "$lib")" | sed 's/^libonnxruntime\.so\.//')
cat > "$tmp/README" <<TXT
lkd-run ($arch Linux): classify images with an LKD-exported ONNX model; needs only glibc 2.28 or newer and the bundled ONNX Runtime $ver.
Run from anywhere, no environment needed: ./lkd-run info model.onnx; ./lkd-run predict model.onnx photo.jpg; ./lkd-run bench model.onnx --threads 2; ./device-check.sh model.onnx [model.int8.onnx] prints this machine's figures to paste into an issue.
Licences: LICENSE (lkd, Apache-2.0), onnxruntime-LICENSE (MIT) and onnxruntime-ThirdPartyNotices.txt.
TXT
rm -rf "$out"
mv "$tmp" "$out"
tar -C "$(dirname "$out")" -czf "$out.tar.gz.tmp" "$(basename "$out")"
mv "$out.tar.gz.tmp" "$out.tar.gz"
mb() { awk -v b="$1" 'BEGIN { printf "%.2f MB", b / 1e6 }'; }
echo "wrote $out: lkd-run $(mb "$(stat -c %s "$out/lkd-run")"), bundle $(mb "$(du -sb "$out" | cut -f1)"), $out.tar.gz $(mb "$(stat -c %s "$out.tar.gz")")"
