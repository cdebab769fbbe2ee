#!/usr/bin/env bash
# GPU check for the day a GPU is lent (issue 14). It builds nothing: it runs binaries built on an
# x86_64 machine (see below) against the GPU machine's own torch
# and onnxruntime, and writes $OUT/gpu-check.json (plus logs) in at most ~8 minutes.
#
#   scripts/gpu-check.sh [BIN_DIR]
#
# BIN_DIR (default: gpu-bins, git-ignored; the device tool carries it) holds, built on x86_64 with
# LIBTORCH = the CUDA torch 2.11 wheel (so libtorch_cuda and NCCL are linked) and then `strip`ped
# (dist_check: 72 MB with debug info, 1.2 MB stripped; a call carries at most 64 MiB):
#   lkd         cargo build --bin lkd   (or --release)
#   dist_check  cargo build -p lkd-trainer -p lkd-dist --lib --example dist_check (optional)
# Steps (each recorded as pass / fail / skipped with its reason; a failing step does not stop the
# others, and the script exits non-zero if any step failed):
#   doctor        `lkd doctor`: libtorch sees CUDA, which ORT providers exist
#   dist          dist_check: NCCL broadcast/all-reduce/bucketed gradients with one worker per
#                 GPU, N workers x B == 1 worker x N·B, bf16 autocast dtype (lkd-dist alone)
#   teacher       `lkd train` of a SLaK nano teacher for a few steps on cuda
#   distill_*     a few distillation steps in fp32, bf16 and fp16 (run.precision); loss curves
#                 compared to fp32, gradient norms must be finite and non-zero
#   ddp           `lkd distill --nproc-per-node N` when more than one GPU is visible
#   cuda_ep       `lkd predict --device cuda`: succeeds on the CUDA EP, or fails with a clear
#                 error when ORT has no CUDA EP (never a silent CPU run)
#   latency_*     `lkd bench --device cuda` for convnext_tiny and slak_tiny
# Data is synthetic (Fashion-MNIST-format IDX files written by python3), since the GPU machine
# has no network and carrying the real set would use half of the 64 MiB a call may carry.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN_DIR=${1:-$ROOT/gpu-bins}
[ -d "$BIN_DIR" ] || { echo "[gpu-check] FATAL: no binary folder $BIN_DIR (see the header of $0)" >&2; exit 2; }
BIN_DIR=$(cd "$BIN_DIR" && pwd)
OUT=${OUT:-$ROOT/gpu-check-out}
LKD="$BIN_DIR/lkd"
DIST_CHECK="$BIN_DIR/dist_check"
PY=${PYTHON:-python3}
STEPS=${LKD_GPU_CHECK_STEPS:-40}
mkdir -p "$OUT"
rm -f "$OUT"/*.log "$OUT"/metrics-*.jsonl "$OUT/gpu-check.json"
LOG="$OUT/gpu-check.log"
: >"$LOG"
START=$(date +%s)

say() { echo "[gpu-check $(($(date +%s) - START))s] $*" | tee -a "$LOG" >&2; }
die() { say "FATAL: $*"; exit 2; }

[ -x "$LKD" ] || die "no lkd binary at $LKD (build it on x86_64, strip it, copy it into BIN_DIR; see the header)"
command -v "$PY" >/dev/null || die "$PY not found (the GPU machine's python with torch)"
WORK=$(mktemp -d /tmp/lkd-gpu-check.XXXXXX)

# The GPU machine's torch and onnxruntime provide libtorch and ORT at run time.
TORCH_LIB=$("$PY" -c 'import torch,os;print(os.path.join(os.path.dirname(torch.__file__),"lib"))') \
  || die "python3 cannot import torch"
ORT_LIB=$("$PY" -c 'import onnxruntime,os,glob;d=os.path.join(os.path.dirname(onnxruntime.__file__),"capi");print(sorted(glob.glob(d+"/libonnxruntime.so*"))[0])' 2>/dev/null || true)
export LD_LIBRARY_PATH="$TORCH_LIB${ORT_LIB:+:$(dirname "$ORT_LIB")}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
[ -n "$ORT_LIB" ] && export ORT_DYLIB_PATH="$ORT_LIB"
export LKD_CACHE="$WORK/cache"
export LKD_PYTHON="$PY"
GPUS=$("$PY" -c 'import torch;print(torch.cuda.device_count())')
say "torch lib $TORCH_LIB; ORT ${ORT_LIB:-none}; $GPUS GPU(s)"

# Results: one JSON object per step, gathered into gpu-check.json at the end.
RESULTS="$WORK/results.jsonl"
: >"$RESULTS"
FAILED=0
record() { # name status detail-json
  printf '{"step": "%s", "status": "%s", "detail": %s}\n' "$1" "$2" "$3" >>"$RESULTS"
  [ "$2" = fail ] && FAILED=1
  say "$1: $2"
}
json_str() { "$PY" -c 'import json,sys;print(json.dumps(sys.stdin.read()[-2000:]))'; }

# Runs a step's command with a time limit, its output in $OUT/NAME.log; returns its status.
run_step() { # name seconds cmd...
  local name=$1 secs=$2
  shift 2
  say "$name: $*"
  timeout --kill-after=10 "$secs" "$@" >"$OUT/$name.log" 2>&1
}

# 1. doctor
if run_step doctor 60 "$LKD" doctor; then
  if grep -q "CUDA         available" "$OUT/doctor.log"; then
    record doctor pass "$(json_str <"$OUT/doctor.log")"
  else
    record doctor fail "$(printf 'libtorch does not see CUDA (is libtorch_cuda linked? see TOOLCHAIN.md):\n%s' "$(cat "$OUT/doctor.log")" | json_str)"
  fi
else
  record doctor fail "$(json_str <"$OUT/doctor.log")"
fi

# 2. lkd-dist on real GPUs (independent of the training loop's wiring).
if [ -x "$DIST_CHECK" ]; then
  if run_step dist 180 "$DIST_CHECK" --device cuda --timeout-s 90; then
    record dist pass "$(tail -n 1 "$OUT/dist.log")"
  else
    record dist fail "$(json_str <"$OUT/dist.log")"
  fi
else
  record dist skipped '"no dist_check binary in BIN_DIR"'
fi

# 3. Synthetic Fashion-MNIST-format data: 10 classes of class-dependent stripes plus noise.
"$PY" - "$WORK/data" <<'PY'
import gzip, os, struct, sys
import numpy as np
root = sys.argv[1]
os.makedirs(root, exist_ok=True)
rng = np.random.default_rng(0)
def split(n, name):
    labels = rng.integers(0, 10, n).astype(np.uint8)
    yy, xx = np.mgrid[0:28, 0:28]
    base = np.stack([128 + 100 * np.sin((xx * (c % 5 + 1) + yy * (c // 5 + 1)) / 4.0) for c in range(10)])
    imgs = np.clip(base[labels] + rng.normal(0, 40, (n, 28, 28)), 0, 255).astype(np.uint8)
    with gzip.open(os.path.join(root, f"{name}-images-idx3-ubyte.gz"), "wb") as f:
        f.write(struct.pack(">IIII", 0x803, n, 28, 28) + imgs.tobytes())
    with gzip.open(os.path.join(root, f"{name}-labels-idx1-ubyte.gz"), "wb") as f:
        f.write(struct.pack(">II", 0x801, n) + labels.tobytes())
split(8192, "train")
split(1024, "t10k")
PY
DATA=(--set "data.dataset.path=\"$WORK/data\"" --set data.workers=4 --set run.log_every=5 --quiet)

# 4. A teacher, a few steps on cuda.
TEACHER="$WORK/teacher"
if run_step teacher 120 "$LKD" train --config "$ROOT/configs/fmnist-slak-proxy.toml" --device cuda \
  --out "$TEACHER" --epochs 1 --set "run.max_steps=$STEPS" "${DATA[@]}"; then
  record teacher pass "$(tail -n 3 "$TEACHER/metrics.jsonl" 2>/dev/null | json_str)"
else
  record teacher fail "$(json_str <"$OUT/teacher.log")"
fi

# 5. Distillation in each precision (run.precision; fp32 is the default and is not named);
# clip_grad (huge) makes the loop log grad_norm. fp16 logs loss_scale and skipped_steps.
distill() { # name precision extra-args...
  local name=$1 p=$2
  shift 2
  local precision=()
  [ "$p" = fp32 ] || precision=(--set "run.precision=\"$p\"")
  run_step "distill_$name" 120 "$LKD" distill --config "$ROOT/configs/fmnist-convnext-proxy-nkd.toml" \
    --teacher "$TEACHER" --device cuda --out "$WORK/kd-$name" --epochs 1 \
    --set "run.max_steps=$STEPS" "${precision[@]}" --set optim.clip_grad=1e9 "${DATA[@]}" "$@"
}
for p in fp32 bf16 fp16; do
  if [ -d "$TEACHER" ] && distill "$p" "$p"; then
    cp "$WORK/kd-$p/metrics.jsonl" "$OUT/metrics-$p.jsonl" 2>/dev/null || true
    record "distill_$p" pass '"ran"'
  elif [ -d "$TEACHER" ]; then
    record "distill_$p" fail "$(json_str <"$OUT/distill_$p.log")"
  else
    record "distill_$p" fail '"not run: no teacher"'
  fi
done

# Loss curves vs fp32: relative difference of each logged loss; grad norms finite and > 0.
for p in bf16 fp16; do
  if [ ! -f "$OUT/metrics-fp32.jsonl" ] || [ ! -f "$OUT/metrics-$p.jsonl" ]; then
    record "compare_$p" fail '"no metrics to compare"'
    continue
  fi
  if verdict=$("$PY" - "$OUT/metrics-fp32.jsonl" "$OUT/metrics-$p.jsonl" <<'PY'
import json, math, sys
def rows(path):
    return [r for r in map(json.loads, open(path)) if "loss" in r and "step" in r]
ref, got = rows(sys.argv[1]), rows(sys.argv[2])
pairs = [(a["loss"], b["loss"]) for a, b in zip(ref, got) if a["step"] == b["step"]]
norms = [r.get("grad_norm") for r in got]
rel = max(abs(a - b) / max(abs(a), 1e-8) for a, b in pairs) if pairs else float("nan")
# fp16: a non-finite norm (JSON null) is expected on a step the loss scaler skipped
# (skipped_steps grew); a zero norm never is.
bad_norm, skipped = [], 0
for r in got:
    n, s = r.get("grad_norm"), r.get("skipped_steps", 0)
    if n == 0.0 or ((n is None or not math.isfinite(n)) and s == skipped):
        bad_norm.append(n)
    skipped = s
scales = [r["loss_scale"] for r in got if "loss_scale" in r]
ok = bool(pairs) and rel <= 0.05 and not bad_norm
print(json.dumps({"points": len(pairs), "max_rel_loss_diff_vs_fp32": rel, "tolerance": 0.05,
                  "grad_norms": norms, "zero_or_nonfinite_grad_norms": len(bad_norm),
                  "loss_scales": scales, "skipped_steps": skipped,
                  "losses": [b for _, b in pairs], "losses_fp32": [a for a, _ in pairs], "pass": ok}))
sys.exit(0 if ok else 1)
PY
  ); then
    record "compare_$p" pass "$verdict"
  else
    record "compare_$p" fail "${verdict:-\"comparison failed\"}"
  fi
done

# 6. Data-parallel over NCCL through the CLI, when there is more than one GPU.
if [ "$GPUS" -gt 1 ] && [ -d "$TEACHER" ]; then
  if distill ddp fp32 --nproc-per-node "$GPUS"; then
    record ddp pass "$(tail -n 2 "$WORK/kd-ddp/metrics.jsonl" 2>/dev/null | json_str)"
  else
    record ddp fail "$(json_str <"$OUT/distill_ddp.log")"
  fi
else
  record ddp skipped "\"$GPUS GPU(s) visible\""
fi

# 7. CUDA EP strictness: the student as ONNX, predicted with --device cuda.
IMG="$WORK/probe.png"
"$PY" -c "from PIL import Image; Image.new('L', (28, 28), 128).save('$IMG')"
if [ -d "$WORK/kd-fp32" ] && run_step export_student 120 "$LKD" export "$WORK/kd-fp32" --out "$WORK/student.onnx"; then
  if run_step cuda_ep 60 "$LKD" predict "$WORK/student.onnx" "$IMG" --device cuda --json; then
    if grep -q '"provider": "CUDAExecutionProvider"' "$OUT/cuda_ep.log"; then
      record cuda_ep pass "$(json_str <"$OUT/cuda_ep.log")"
    else
      record cuda_ep fail "$(printf 'ran, but not on the CUDA EP:\n%s' "$(cat "$OUT/cuda_ep.log")" | json_str)"
    fi
  elif grep -qi "cuda" "$OUT/cuda_ep.log"; then
    # No CUDA EP in this ORT (the machine's CPU wheel): a clear error is the strict behaviour.
    record cuda_ep pass "$(printf 'refused as required (ORT without a CUDA EP):\n%s' "$(cat "$OUT/cuda_ep.log")" | json_str)"
  else
    record cuda_ep fail "$(json_str <"$OUT/cuda_ep.log")"
  fi
else
  record cuda_ep fail "$(json_str <"$OUT/export_student.log" 2>/dev/null || echo '"no student run dir"')"
fi

# 8. Runtime CUDA latency of the full-size models (random weights in the official layout).
for preset in convnext_tiny slak_tiny; do
  case_dir="$WORK/case-$preset"
  if run_step "case_$preset" 120 "$PY" "$ROOT/tests/reference/make_case.py" --preset "$preset" --out "$case_dir" --batch 1 \
    && run_step "export_$preset" 180 "$LKD" export --preset "$preset" --checkpoint "$case_dir/checkpoint.pth" \
      --out "$WORK/$preset.onnx" --reparam decomposed --no-check \
    && run_step "latency_$preset" 120 "$LKD" bench "$WORK/$preset.onnx" --device cuda --batch 1,32 --iters 50 --json; then
    record "latency_$preset" pass "$(cat "$OUT/latency_$preset.log")"
  else
    # The last log written is the step that failed.
    for stage in latency export case; do
      log="$OUT/${stage}_$preset.log"
      if [ -f "$log" ]; then
        record "latency_$preset" fail "$(printf '%s failed:\n%s' "$stage" "$(cat "$log")" | json_str)"
        break
      fi
    done
  fi
done

# Summary.
"$PY" - "$RESULTS" "$OUT/gpu-check.json" "$(($(date +%s) - START))" "$GPUS" <<'PY'
import json, subprocess, sys
steps = [json.loads(l) for l in open(sys.argv[1])]
try:
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=20).stdout.strip()
except Exception as e:  # the summary must still be written
    gpu = f"nvidia-smi failed: {e}"
summary = {"seconds": int(sys.argv[3]), "gpus": int(sys.argv[4]), "gpu": gpu,
           "failed": [s["step"] for s in steps if s["status"] == "fail"], "steps": steps}
json.dump(summary, open(sys.argv[2], "w"), indent=2)
print(json.dumps({"failed": summary["failed"], "seconds": summary["seconds"]}))
PY
rm -rf "$WORK"
exit "$FAILED"
