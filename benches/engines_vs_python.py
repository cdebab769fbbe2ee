"""One exported model, batch 1: `lkd-run bench` on each of its engines against the same engines
driven from Python (openvino and onnxruntime wheels), side by side in one run.

Each round runs every contender once as its own process, in an order rotated every round, so
load from other processes hits all alike; each contender reports its median latency over
`--iters` runs after `--warmup`. The table gives the median over rounds and, for every
contender, its per-round ratio to the fastest contender of that round (median and min–max).

Usage (environment from `eval "$(make -s env)"`):
    $LKD_PYTHON benches/engines_vs_python.py MODEL.onnx [--lkd-run PATH] [--rounds 5]
        [--iters 20] [--warmup 3] [--threads 2]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

PY_WORKER = r"""
import json, sys, time
import numpy as np
engine, path, threads, iters, warmup = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
if engine == "openvino":
    import openvino as ov
    core = ov.Core()
    model = core.read_model(path)
    shape = [1] + [d.get_length() for d in model.inputs[0].get_partial_shape()[1:]]
    model.reshape({model.inputs[0].get_any_name(): shape})
    compiled = core.compile_model(model, "CPU", {
        "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads,
        "INFERENCE_PRECISION_HINT": "f32", "NUM_STREAMS": 1})
    request = compiled.create_infer_request()
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    run = lambda: request.infer({0: x})
else:
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [1] + [d if isinstance(d, int) else 1 for d in inp.shape[1:]]
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    run = lambda: sess.run(None, {inp.name: x})
for _ in range(warmup):
    run()
times = []
for _ in range(iters):
    t = time.perf_counter()
    run()
    times.append((time.perf_counter() - t) * 1e3)
print(json.dumps({"p50_ms": float(np.median(times))}))
"""


def lkd(lkd_run, model, engine, a):
    out = subprocess.run(
        [lkd_run, "bench", model, "--engine", engine, "--threads", str(a.threads), "--batch", "1",
         "--iters", str(a.iters), "--warmup", str(a.warmup), "--json"],
        check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out)["results"][0]["p50_ms"]


def python(engine, model, a):
    out = subprocess.run(
        [sys.executable, "-c", PY_WORKER, engine, model, str(a.threads), str(a.iters), str(a.warmup)],
        check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["p50_ms"]


def cpu_flags():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                keep = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")
                return " ".join(fl for fl in line.split(":", 1)[1].split() if fl in keep)
    return "?"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--lkd-run", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "lkd-run"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    contenders = {
        "lkd-run --engine openvino": lambda: lkd(a.lkd_run, a.model, "openvino", a),
        "lkd-run --engine ort": lambda: lkd(a.lkd_run, a.model, "ort", a),
        "Python openvino": lambda: python("openvino", a.model, a),
        "Python onnxruntime": lambda: python("ort", a.model, a),
    }
    names = list(contenders)
    p50 = {n: [] for n in names}
    rel = {n: [] for n in names}
    with open("/proc/loadavg") as f:
        print(f"load average at start: {f.read().split()[0]}", file=sys.stderr)
    for r in range(a.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        this = {}
        for n in order:
            this[n] = contenders[n]()
            print(f"round {r + 1} {n}: p50 {this[n]:.1f} ms", file=sys.stderr)
        best = min(this.values())
        for n in names:
            p50[n].append(this[n])
            rel[n].append(this[n] / best)
    with open("/proc/loadavg") as f:
        print(f"load average at end: {f.read().split()[0]}", file=sys.stderr)
    print(f"\n{os.path.basename(a.model)}, batch 1, {a.threads} threads, {a.rounds} rounds x {a.iters} runs; "
          f"CPU flags: {cpu_flags()}")
    print("| contender | p50 ms (median of rounds) | time / fastest of the round (median, min–max) |")
    print("|---|---:|---|")
    for n in names:
        print(f"| {n} | {statistics.median(p50[n]):.1f} | {statistics.median(rel[n]):.2f} "
              f"({min(rel[n]):.2f}–{max(rel[n]):.2f}) |")


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"\n({time.time() - t0:.0f} s)", file=sys.stderr)
