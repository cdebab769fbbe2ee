#!/usr/bin/env bash
# Idempotent setup: installs only what is missing, then writes the environment cargo needs.
# The venv lives outside the repo ($LKD_CACHE, default ~/.cache/lkd) and is reused when present.
set -euo pipefail

LKD_CACHE="${LKD_CACHE:-$HOME/.cache/lkd}"
VENV="$LKD_CACHE/venv"
TORCH_VERSION=2.11.0
ORT_VERSION=1.31.1
DATASET_DIR=/usr/share/datasets/fashion-mnist
mkdir -p "$LKD_CACHE"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if [ ! -f "$DATASET_DIR/train-images-idx3-ubyte.gz" ]; then
  echo "[bootstrap] installing Debian package dataset-fashion-mnist" >&2
  as_root apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq dataset-fashion-mnist >&2
fi

# Data-parallel training (lkd-dist): Gloo's headers for the c10d shim; the Gloo that runs is libtorch's.
if [ ! -f /usr/include/gloo/config.h ]; then
  echo "[bootstrap] installing Debian package libgloo-dev (headers for lkd-dist)" >&2
  as_root apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq libgloo-dev >&2
fi

# The training loader decodes JPEG with libjpeg-turbo (lkd-trainer links it through pkg-config).
if ! pkg-config --exists libturbojpeg 2>/dev/null; then
  echo "[bootstrap] installing Debian package libturbojpeg0-dev (libjpeg-turbo for the training loader)" >&2
  as_root apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq libturbojpeg0-dev pkg-config >&2
fi

stamp="$VENV/.lkd-ready-torch$TORCH_VERSION-ort$ORT_VERSION"
if [ ! -f "$stamp" ]; then
  echo "[bootstrap] creating venv $VENV (torch==$TORCH_VERSION, onnxruntime==$ORT_VERSION, onnx, numpy)" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip >&2
  "$VENV/bin/pip" install -q "torch==$TORCH_VERSION" "onnxruntime==$ORT_VERSION" onnx numpy >&2
  touch "$stamp"
fi

# Peer code the tests compare against (torchvision/timm parity, the KServe v2 client, OpenVINO as
# a second CPU engine). timm without deps so it cannot replace the pinned torch.
peers_stamp="$VENV/.lkd-peers-tv0.26.0-timm1.0.31-triton2-ov2026.4"
if [ ! -f "$peers_stamp" ]; then
  echo "[bootstrap] installing peer packages (torchvision, timm, tritonclient[http], openvino)" >&2
  "$VENV/bin/pip" install -q "torchvision==0.26.0" "tritonclient[http]>=2.73,<3" "openvino==2026.4.*" \
    huggingface_hub pyyaml safetensors pillow >&2
  "$VENV/bin/pip" install -q --no-deps "timm==1.0.31" >&2
  touch "$peers_stamp"
fi

site=$("$VENV/bin/python" -c 'import sysconfig;print(sysconfig.get_paths()["purelib"])')
torch_dir="$site/torch"
ort_lib=$(ls "$site"/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | head -n1)
[ -n "$ort_lib" ] || { echo "[bootstrap] libonnxruntime not found under $site/onnxruntime/capi" >&2; exit 1; }

# OpenVINO (the lkd-openvino engine) opens libopenvino_c by path; the wheel ships only the
# versioned name, so point at that file. Missing is not fatal here: the engine then says so.
ov_lib=$(ls "$site"/openvino/libs/libopenvino_c.so.* 2>/dev/null | sort -V | tail -n1)
[ -n "$ov_lib" ] || echo "[bootstrap] warning: libopenvino_c.so.* not found under $site/openvino/libs; the OpenVINO engine will not load" >&2

# CUDA headers the wheel lacks (CCCL's nv/target, crt/), so lkd-dist compiles its NCCL path; headers only.
cuda_hdr="$LKD_CACHE/cuda-headers"
if [ -f "$torch_dir/lib/libtorch_cuda.so" ] && [ ! -f "$cuda_hdr/.lkd-cccl13.0.85-crt13.0.88" ]; then
  echo "[bootstrap] fetching CUDA 13.0 headers (nvidia-cuda-cccl, nvidia-cuda-crt) into $cuda_hdr" >&2
  rm -rf "$cuda_hdr" && mkdir -p "$cuda_hdr/wheels"
  "$VENV/bin/pip" download -q --no-deps -d "$cuda_hdr/wheels" nvidia-cuda-cccl==13.0.85 nvidia-cuda-crt==13.0.88 >&2
  for w in "$cuda_hdr"/wheels/*.whl; do "$VENV/bin/python" -m zipfile -e "$w" "$cuda_hdr"; done
  rm -rf "$cuda_hdr/wheels" && touch "$cuda_hdr/.lkd-cccl13.0.85-crt13.0.88"
fi

# The environment for cargo and the binaries, as make-includable assignments.
cat > "$LKD_CACHE/env.mk" <<MK
export LKD_CACHE := $LKD_CACHE
export LKD_PYTHON := $VENV/bin/python
export LIBTORCH := $torch_dir
export LIBTORCH_BYPASS_VERSION_CHECK := 1
export LD_LIBRARY_PATH := $torch_dir/lib:$(dirname "$ort_lib")
export ORT_DYLIB_PATH := $ort_lib
export LKD_FASHION_MNIST := $DATASET_DIR
export LKD_OPENVINO_LIB := $ov_lib
MK
echo "$LKD_CACHE/env.mk"
