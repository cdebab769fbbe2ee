#!/usr/bin/env bash
# Measures lkd-run on the machine it runs on and prints one Markdown report to paste into an
# issue: the machine (CPU model, cores, glibc, kernel), batch-1 latency p50/p99 at 1..N threads
# for each model (e.g. the FP32 export and its `lkd quantize` INT8 version), then per model the
# peak RSS and the cold start (process start to first prediction printed) of `lkd-run predict`.
# Shipped in the edge bundle; uses the lkd-run beside it (or $LKD_RUN). Needs only bash and
# coreutils; peak RSS also needs GNU time (/usr/bin/time) or python3.
# Usage: device-check.sh [--threads N] [--iters K] MODEL.onnx [MODEL.int8.onnx ...]
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
lkd_run=${LKD_RUN:-$here/lkd-run}
max_threads=$(nproc)
iters=200
usage="usage: $0 [--threads N] [--iters K] MODEL.onnx [MODEL.int8.onnx ...]"
models=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --threads) max_threads=${2:?$usage}; shift 2 ;;
        --iters) iters=${2:?$usage}; shift 2 ;;
        -h|--help) echo "$usage"; exit 0 ;;
        -*) echo "error: unknown option $1" >&2; echo "$usage" >&2; exit 2 ;;
        *) models+=("$1"); shift ;;
    esac
done
[[ ${#models[@]} -gt 0 ]] || { echo "$usage" >&2; exit 2; }
[[ $max_threads =~ ^[1-9][0-9]*$ ]] || { echo "error: --threads must be a positive integer, found $max_threads" >&2; exit 2; }
[[ $iters =~ ^[1-9][0-9]*$ ]] || { echo "error: --iters must be a positive integer, found $iters" >&2; exit 2; }
[[ -x $lkd_run ]] || { echo "error: $lkd_run is not an executable (run this script from the bundle, or set LKD_RUN)" >&2; exit 1; }
for m in "${models[@]}"; do [[ -f $m ]] || { echo "error: model $m does not exist" >&2; exit 1; }; done

cpu_model() {
    local m
    m=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
    # ARM kernels print no model name; device-tree boards name themselves, otherwise use lscpu.
    [[ -n $m ]] || m=$(tr -d '\0' < /proc/device-tree/model 2>/dev/null || true)
    [[ -n $m ]] || m=$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -n1)
    local part
    part=$(sed -n 's/^CPU part[[:space:]]*: //p' /proc/cpuinfo | sort -u | tr '\n' ' ' | sed 's/ $//' || true)
    [[ -z $part ]] || m="$m (CPU part $part)"
    echo "${m:-unknown}"
}
glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null || ldd --version 2>/dev/null | head -n1 || echo unknown)
features=$(sed -n 's/^\(Features\|flags\)[[:space:]]*: //p' /proc/cpuinfo | head -n1 |
    tr ' ' '\n' | grep -E -x 'asimd|asimddp|i8mm|sve|bf16|avx2|avx512f|avx512_vnni|avx_vnni|amx_int8' | tr '\n' ' ' | sed 's/ $//' || true)

# A 64x64 grey BMP for predict: written by printf, so no image tool is needed.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
le32() { printf "\\x$(printf %02x $(($1 & 255)))\\x$(printf %02x $(($1 >> 8 & 255)))\\x$(printf %02x $(($1 >> 16 & 255)))\\x$(printf %02x $(($1 >> 24 & 255)))"; }
{
    printf 'BM'; le32 $((54 + 64 * 64 * 3)); le32 0; le32 54
    le32 40; le32 64; le32 64; printf '\x01\x00\x18\x00'; le32 0; le32 $((64 * 64 * 3)); le32 2835; le32 2835; le32 0; le32 0
    head -c $((64 * 64 * 3)) /dev/zero | tr '\0' '\200'
} > "$work/grey.bmp"

echo "## lkd-run device check"
echo
echo "| | |"
echo "|---|---|"
echo "| machine | $(cpu_model), $(uname -m) |"
echo "| cores | $(nproc) online |"
echo "| SIMD | ${features:-none listed} |"
echo "| glibc | $glibc |"
echo "| kernel | $(uname -sr) |"
echo "| lkd-run | $("$lkd_run" --version 2>/dev/null || echo unknown) |"
echo
echo "Batch 1, $iters timed runs after 5 warm-up, spinning off (\`lkd-run bench --threads 1..$max_threads\`):"
echo
echo "| model | threads | p50 (ms) | p99 (ms) | images/s |"
echo "|---|---|---|---|---|"
threads=$(seq -s, 1 "$max_threads")
for m in "${models[@]}"; do
    "$lkd_run" bench "$m" --threads "$threads" --iters "$iters" --json > "$work/bench.json"
    # One field per line in lkd-run's JSON; no jq on most boards.
    awk -v name="$(basename "$m")" -F': ' '
        /"threads"/ { t = $2 + 0 }
        /"p50_ms"/ { p50 = $2 + 0 }
        /"p99_ms"/ { p99 = $2 + 0 }
        /"throughput_img_s"/ { printf "| %s | %d | %.3f | %.3f | %.1f |\n", name, t, p50, p99, $2 + 0 }
    ' "$work/bench.json"
done

peak_rss_kib() {
    if [[ -x /usr/bin/time ]] && /usr/bin/time -f %M true >/dev/null 2>&1; then
        /usr/bin/time -o "$work/rss" -f %M "$@" >/dev/null 2>&1 && cat "$work/rss"
    elif command -v python3 >/dev/null; then
        python3 -c 'import resource, subprocess, sys
subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)' "$@"
    else
        echo "n/a"
    fi
}

echo
echo "\`lkd-run predict MODEL grey.bmp --threads 1\` (cold start: the first run, and the fastest of 5):"
echo
echo "| model | size (MB) | peak RSS (MB) | cold start first (ms) | cold start best of 5 (ms) |"
echo "|---|---|---|---|---|"
for m in "${models[@]}"; do
    times=()
    for _ in 1 2 3 4 5; do
        t0=$(date +%s%N)
        "$lkd_run" predict "$m" "$work/grey.bmp" --threads 1 >/dev/null 2>"$work/err" ||
            { cat "$work/err" >&2; exit 1; }
        t1=$(date +%s%N)
        times+=($(((t1 - t0) / 1000000)))
    done
    best=$(printf '%s\n' "${times[@]}" | sort -n | head -n1)
    rss=$(peak_rss_kib "$lkd_run" predict "$m" "$work/grey.bmp" --threads 1)
    [[ $rss == n/a ]] || rss=$(awk -v k="$rss" 'BEGIN { printf "%.1f", k * 1024 / 1e6 }')
    size=$(awk -v b="$(wc -c < "$m")" 'BEGIN { printf "%.3f", b / 1e6 }')
    echo "| $(basename "$m") | $size | $rss | ${times[0]} | $best |"
done
