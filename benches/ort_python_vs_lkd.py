"""Our runtime vs Python onnxruntime on the same .onnx file and thread count, batch 1.

Alternates `lkd bench` and an onnxruntime Python loop for several rounds (order swapped each
round) and prints the per-round and median ratio ours / python (goal: <= 1.02).

Usage (after `eval "$(make -s env)"`):
    $LKD_PYTHON benches/ort_python_vs_lkd.py MODEL.onnx [--threads 1] [--iters 200] [--rounds 5]
"""
import argparse
import json
import statistics
import subprocess
import time

import numpy as np
import onnxruntime as ort


def python_p50(path, threads, iters):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    inp = s.get_inputs()[0]
    shape = [1] + [d if isinstance(d, int) else 1 for d in inp.shape[1:]]
    x = np.random.randn(*shape).astype(np.float32)
    for _ in range(5):
        s.run(None, {inp.name: x})
    ts = []
    for _ in range(iters):
        t = time.perf_counter()
        s.run(None, {inp.name: x})
        ts.append((time.perf_counter() - t) * 1e3)
    return float(np.median(ts))


def ours_p50(lkd, path, threads, iters):
    out = subprocess.run(
        [lkd, "bench", path, "--batch", "1", "--threads", str(threads), "--iters", str(iters), "--warmup", "5", "--json"],
        check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out)["results"][0]["p50_ms"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--lkd", default="target/release/lkd")
    a = p.parse_args()
    ratios = []
    for r in range(a.rounds):
        if r % 2 == 0:
            ours, py = ours_p50(a.lkd, a.model, a.threads, a.iters), python_p50(a.model, a.threads, a.iters)
        else:
            py, ours = python_p50(a.model, a.threads, a.iters), ours_p50(a.lkd, a.model, a.threads, a.iters)
        ratios.append(ours / py)
        print(f"round {r}: ours {ours:.3f} ms, python onnxruntime {py:.3f} ms, ratio {ours / py:.3f}")
    print(f"median ratio ours/python over {a.rounds} rounds: {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
