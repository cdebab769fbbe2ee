"""Side-by-side training-step throughput: lkd (benches/train.rs, `--raw`) against the same step in
PyTorch eager (benches/train_step_torch.py) on the same libtorch and thread count.

Runs alternate between the two every round (order swapped each round) so that load from other
processes hits both alike; the table gives medians over all measured steps and the median of the
per-round ratios. Also measures the Fashion-MNIST loader (nano transforms) alone and feeding the
nano step, for the data share.

Usage (environment from `eval "$(make -s env)"`):
    $LKD_PYTHON benches/compare_train_step.py [--cases nano,tiny] [--rounds 5] [--threads 2]
        [--iters 10] [--tiny-iters 2] [--tiny-warmup 1] [--bin PATH]
Without --bin the bench binary is built with `cargo bench --bench train --no-run`.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def bench_binary():
    out = subprocess.run(
        ["cargo", "bench", "--bench", "train", "--no-run", "--message-format=json"],
        cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True,
    ).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg.get("target", {}).get("name") == "train" and msg.get("executable"):
            return msg["executable"]
    sys.exit("cargo built no `train` bench executable")


def run(cmd):
    res = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    if res.returncode != 0:
        sys.exit(f"failed ({res.returncode}): {' '.join(cmd)}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def loadavg():
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default="nano,slak_train,tiny")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10, help="measured nano steps per run")
    ap.add_argument("--tiny-iters", type=int, default=2, help="measured tiny steps per run")
    ap.add_argument("--tiny-warmup", type=int, default=1, help="unmeasured tiny steps per run")
    ap.add_argument("--workers", type=int, default=2, help="loader workers")
    ap.add_argument("--no-data", action="store_true", help="skip the loader measurements")
    ap.add_argument("--bin", help="bench executable (default: build it)")
    a = ap.parse_args()
    exe = a.bin or bench_binary()
    py = os.environ.get("LKD_PYTHON", sys.executable)
    cases = [c for c in a.cases.split(",") if c]
    common = ["--threads", str(a.threads)]
    runs = {}  # (case, impl) -> list of per-round results
    print(f"load average at start: {loadavg()}", file=sys.stderr)
    for r in range(a.rounds):
        for case in cases:
            iters, warmup = (a.tiny_iters, a.tiny_warmup) if case == "tiny" else (a.iters, 2)
            args = [case, "--iters", str(iters), "--warmup", str(warmup)] + common
            cmds = {"lkd": [exe, "--raw"] + args, "torch": [py, os.path.join(HERE, "train_step_torch.py")] + args}
            order = ["lkd", "torch"] if r % 2 == 0 else ["torch", "lkd"]
            for impl in order:
                res = run(cmds[impl])
                runs.setdefault((case, impl), []).append(res)
                print(f"round {r + 1} {case} {impl}: median step {statistics.median(res['step_s']):.3f} s (load {loadavg()})", file=sys.stderr)
        if not a.no_data and "nano" in cases:
            w = ["--workers", str(a.workers)]
            for mode, iters in (("loader", 200), ("nano_fed", a.iters)):
                res = run([exe, "--raw", mode, "--iters", str(iters), "--warmup", "2"] + common + w)
                runs.setdefault((mode, "lkd"), []).append(res)
    print(f"load average at end: {loadavg()}", file=sys.stderr)

    def pooled(case, impl, key):
        return [v for res in runs[(case, impl)] for v in res[key]]

    print(f"\nthreads={a.threads}, rounds={a.rounds}; img/s from the median step over all rounds")
    print("| case | batch | lkd img/s | PyTorch img/s | ratio (median of rounds) | teacher share lkd / PyTorch |")
    print("|---|---|---|---|---|---|")
    for case in cases:
        batch = runs[(case, "lkd")][0]["batch"]
        med = {i: statistics.median(pooled(case, i, "step_s")) for i in ("lkd", "torch")}
        ratios = [
            statistics.median(t["step_s"]) / statistics.median(o["step_s"])
            for o, t in zip(runs[(case, "lkd")], runs[(case, "torch")])
        ]
        share = {i: statistics.median(pooled(case, i, "teacher_s") or [0.0]) / med[i] for i in ("lkd", "torch")}
        print(
            f"| {case} | {batch} | {batch / med['lkd']:.3g} | {batch / med['torch']:.3g} | "
            f"{statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f}) | "
            f"{100 * share['lkd']:.0f}% / {100 * share['torch']:.0f}% |"
        )
    print("\nphases (median seconds; lkd / PyTorch):")
    print("| case | student forward | teacher forward | loss + backward | AdamW + zero_grad |")
    print("|---|---|---|---|---|")
    for case in cases:
        cells = []
        for key in ("forward_s", "teacher_s", "backward_s", "optim_s"):
            o, t = (statistics.median(pooled(case, i, key)) for i in ("lkd", "torch"))
            cells.append(f"{o:.4f} / {t:.4f} ({o / t:.2f}x)" if t > 0 else f"{o:.4f} / {t:.4f}")
        print(f"| {case} | " + " | ".join(cells) + " |")
    if ("loader", "lkd") in runs:
        batch = runs[("loader", "lkd")][0]["batch"]
        loader_ips = statistics.median(batch * res["batches"] / res["seconds"] for res in runs[("loader", "lkd")])
        step_ips = batch / statistics.median(pooled("nano", "lkd", "step_s"))
        fed_step = pooled("nano_fed", "lkd", "step_s")
        fed_wait = pooled("nano_fed", "lkd", "wait_s")
        fed_ips = batch / statistics.median(fed_step)
        print(f"\ndata (Fashion-MNIST, nano transforms, {a.workers} workers, batch {batch}):")
        print(f"- loader alone: {loader_ips:.0f} img/s; nano step alone: {step_ips:.0f} img/s; "
              f"loader work per step if serial: {100 * step_ips / loader_ips:.1f}% of step time")
        print(f"- step fed by the loader: {fed_ips:.0f} img/s; waiting for data: "
              f"{100 * sum(fed_wait) / sum(fed_step):.1f}% of step time")


if __name__ == "__main__":
    main()
