#!/usr/bin/env bash
# Idempotent setup for the edge bundles (`make edge`, and the aarch64 tests in `make test`):
# installs only what is missing, then prints the path of a make-includable env file.
#   - rustup target aarch64-unknown-linux-gnu
#   - cargo-zigbuild + ziglang (PyPI, own venv): links against glibc 2.28 symbols for both targets
#   - Debian's aarch64 runtime libraries (the loader, libc, libstdc++ that libonnxruntime needs),
#     aarch64 binutils (strip) and qemu-user to run the aarch64 binary on this machine
#   - the aarch64 onnxruntime wheel (same version as the host's), unpacked into $LKD_CACHE
set -euo pipefail

LKD_CACHE="${LKD_CACHE:-$HOME/.cache/lkd}"
ORT_VERSION=1.31.1
ZIGBUILD_VERSION=0.24.1
ZIG_VERSION=0.15.2
ZIG_VENV="$LKD_CACHE/zig-venv"
ORT_ARM="$LKD_CACHE/onnxruntime-$ORT_VERSION-aarch64"
mkdir -p "$LKD_CACHE"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

command -v rustup >/dev/null || { echo "[bootstrap-aarch64] rustup is missing: the aarch64 target is installed through it (https://rustup.rs)" >&2; exit 1; }
if ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
  echo "[bootstrap-aarch64] rustup target add aarch64-unknown-linux-gnu" >&2
  rustup target add aarch64-unknown-linux-gnu >&2
fi

debs=(qemu-user libc6-arm64-cross libstdc++6-arm64-cross libgcc-s1-arm64-cross binutils-aarch64-linux-gnu)
missing=()
for d in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$d" 2>/dev/null | grep -q "install ok installed" || missing+=("$d")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[bootstrap-aarch64] installing Debian packages ${missing[*]}" >&2
  as_root apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

zig_stamp="$ZIG_VENV/.lkd-zigbuild$ZIGBUILD_VERSION-zig$ZIG_VERSION"
if [ ! -f "$zig_stamp" ]; then
  echo "[bootstrap-aarch64] creating $ZIG_VENV (cargo-zigbuild==$ZIGBUILD_VERSION, ziglang==$ZIG_VERSION)" >&2
  rm -rf "$ZIG_VENV"
  python3 -m venv "$ZIG_VENV"
  "$ZIG_VENV/bin/pip" install -q "cargo-zigbuild==$ZIGBUILD_VERSION" "ziglang==$ZIG_VERSION" >&2
  touch "$zig_stamp"
fi

ort_stamp="$ORT_ARM/.lkd-ready"
if [ ! -f "$ort_stamp" ]; then
  echo "[bootstrap-aarch64] fetching onnxruntime==$ORT_VERSION for manylinux_2_28_aarch64 into $ORT_ARM" >&2
  rm -rf "$ORT_ARM" && mkdir -p "$ORT_ARM/wheel"
  "$ZIG_VENV/bin/pip" download -q --only-binary=:all: --platform manylinux_2_28_aarch64 \
    --python-version 3.11 --no-deps -d "$ORT_ARM/wheel" "onnxruntime==$ORT_VERSION" >&2
  # Only the library and the licences; the Python half of the wheel is not needed.
  "$ZIG_VENV/bin/python" - "$ORT_ARM" <<'PY'
import glob, sys, zipfile
out = sys.argv[1]
(whl,) = glob.glob(out + "/wheel/*.whl")
with zipfile.ZipFile(whl) as z:
    want = [n for n in z.namelist()
            if n.startswith("onnxruntime/capi/libonnxruntime.so")
            or n in ("onnxruntime/LICENSE", "onnxruntime/ThirdPartyNotices.txt")]
    z.extractall(out, want)
PY
  rm -rf "$ORT_ARM/wheel"
  ls "$ORT_ARM"/onnxruntime/capi/libonnxruntime.so.* >/dev/null
  touch "$ort_stamp"
fi
ort_arm_lib=$(ls "$ORT_ARM"/onnxruntime/capi/libonnxruntime.so.* | head -n1)

cat > "$LKD_CACHE/edge.mk" <<MK
export LKD_ZIG_BIN := $ZIG_VENV/bin
export LKD_ORT_AARCH64_LIB := $ort_arm_lib
export LKD_AARCH64_SYSROOT := /usr/aarch64-linux-gnu
MK
echo "$LKD_CACHE/edge.mk"
