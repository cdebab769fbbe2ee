#!/usr/bin/env bash
# Does starting from pretrained weights help, measured on CPU in minutes: convnext_proxy is
# pretrained on Fashion-MNIST classes 0-4 (T-shirt .. Coat), then trained on classes 5-9 (Sandal ..
# Ankle boot) with N images per class, three ways at the same budget (the same number of steps,
# recipe and seeds): from scratch, from the pretrained weights (--init, head re-initialised), and
# as a linear probe of them. Validation: 1 000 images of classes 5-9. Writes $OUT/transfer.md.
#
#   make transfer            (or: LKD=target/debug/lkd bash benches/transfer.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
LKD=${LKD:-./target/release/lkd}
OUT=${OUT:-runs/transfer}
SEEDS=${SEEDS:-"0 1 2"}
SIZES=${SIZES:-"10 50 500"}
STEPS=${STEPS:-150}
BATCH=${BATCH:-16}
CONFIG=configs/fmnist-convnext-proxy.toml
mkdir -p "$OUT"

# Every run: its own seed, a fixed subset, 1 000 validation images, no EMA, no bars.
common=(--config "$CONFIG" --quiet --batch-size "$BATCH" --set data.workers=2
  --set data.dataset.val_limit=1000 --set run.log_every=1000)

# Resumable: a run whose command succeeded has a `.done` marker and is left as it is; any
# other is started over.
finished() { [ -f "$1/.done" ]; }

pre="$OUT/pretrain"
if ! finished "$pre"; then
  rm -rf "$pre"
  "$LKD" train "${common[@]}" --epochs 2 --seed 0 --out "$pre" \
    --set 'data.dataset.class_subset=[0,1,2,3,4]'
  touch "$pre/.done"
fi

for n in $SIZES; do
  # Same steps for every N: full batches per epoch, and epochs to reach STEPS.
  per_epoch=$(( 5 * n / BATCH ))
  [ "$per_epoch" -ge 1 ] || { echo "N=$n gives no full batch of $BATCH" >&2; exit 1; }
  epochs=$(( (STEPS + per_epoch - 1) / per_epoch ))
  for seed in $SEEDS; do
    for mode in scratch init probe; do
      run="$OUT/$mode-n$n-s$seed"
      finished "$run" && continue
      rm -rf "$run"
      extra=()
      case $mode in
        init) extra=(--init "$pre") ;;
        probe) extra=(--init "$pre" --set finetune.linear_probe=true) ;;
      esac
      "$LKD" train "${common[@]}" --epochs "$epochs" --seed "$seed" --out "$run" \
        --set 'data.dataset.class_subset=[5,6,7,8,9]' --set "data.dataset.per_class_limit=$n" \
        --set optim.warmup_epochs=0 "${extra[@]}"
      touch "$run/.done"
    done
  done
done

"${LKD_PYTHON:-python3}" - "$OUT" "$SIZES" "$SEEDS" "$STEPS" "$BATCH" <<'EOF'
import json, os, statistics, sys
out, sizes, seeds, steps, batch = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), sys.argv[4], sys.argv[5]
def best(run):
    b = 0.0
    for line in open(os.path.join(out, run, "metrics.jsonl")):
        e = json.loads(line)
        if "top1" in e and "val_loss" in e:
            b = max(b, e["top1"], e.get("ema_top1") or 0.0)
    return b
def cell(mode, n):
    v = [best(f"{mode}-n{n}-s{s}") for s in seeds]
    return statistics.mean(v), (statistics.stdev(v) if len(v) > 1 else 0.0), v
rows = ["| images per class | scratch | --init (fine-tune) | linear probe | init − scratch |",
        "|---:|---:|---:|---:|---:|"]
for n in sizes:
    s, i, p = cell("scratch", n), cell("init", n), cell("probe", n)
    gain = [b - a for a, b in zip(s[2], i[2])]
    g = statistics.mean(gain), (statistics.stdev(gain) if len(gain) > 1 else 0.0)
    rows.append(f"| {n} | {s[0]:.2f} ± {s[1]:.2f} | {i[0]:.2f} ± {i[1]:.2f} | {p[0]:.2f} ± {p[1]:.2f} | {g[0]:+.2f} ± {g[1]:.2f} |")
text = "\n".join(rows) + (
    f"\n\nTop-1 (%) on 1 000 validation images of Fashion-MNIST classes 5-9, mean ± std over seeds {', '.join(seeds)}; "
    f"{steps} steps of batch {batch} for every cell; pretrained on classes 0-4 (2 epochs, 30 000 images).\n")
open(os.path.join(out, "transfer.md"), "w").write(text)
print(text)
EOF
