"""The `make edge` bundle vs the Python stack a user would use instead, on the same model and image:
cold start to the first printed prediction, peak RSS, installed footprint.

Each round starts `dist/lkd-edge/lkd-run predict` (under `env -i`) and
`python benches/predict_python.py` as fresh processes, alternating which goes first, timing from
spawn to the first line on stdout; peak RSS is the child's ru_maxrss from wait4. The page cache
is warm after the first round (both sides alike): "cold" means a new process, not a cold disk.

Usage (after `make edge` and `eval "$(make -s env)"`):
    $LKD_PYTHON benches/edge_vs_python.py [--model M.onnx --image I.png] [--rounds 10] [--threads 1]
Without --model it generates the `rgb32` and `slow` fixtures (runtime/tests/fixtures/make_models.py).
"""
import argparse
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def du(paths):
    total = 0
    for p in paths:
        if os.path.isfile(p):
            total += os.path.getsize(p)
        for d, _, files in os.walk(p):
            total += sum(os.path.getsize(os.path.join(d, f)) for f in files if not os.path.islink(os.path.join(d, f)))
    return total


def run_once(cmd, env):
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    first = p.stdout.readline()
    first_s = time.perf_counter() - t
    rest = p.stdout.read()
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0 or not first:
        sys.exit(f"{cmd[0]} failed ({p.returncode}): {err.decode()}")
    return first_s, usage.ru_maxrss * 1024, first + rest


def measure(model, image, bundle, rounds, threads):
    edge = ["env", "-i", os.path.join(bundle, "lkd-run"), "predict", model, image, "--top-k", "1", "--threads", str(threads)]
    py = [sys.executable, os.path.join(HERE, "predict_python.py"), model, image, "--threads", str(threads)]
    env = dict(os.environ)
    results = {"edge": [], "python": []}
    out = {}
    for r in range(rounds + 1):  # round 0 only warms the page cache
        order = [("edge", edge), ("python", py)] if r % 2 == 0 else [("python", py), ("edge", edge)]
        for name, cmd in order:
            s, rss, text = run_once(cmd, env)
            out[name] = text.decode().split("\n")[1].split()
            if r > 0:
                results[name].append((s, rss))
    return results, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", action="append")
    ap.add_argument("--image")
    ap.add_argument("--bundle", default=os.path.join(ROOT, "dist", "lkd-edge"))
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="lkd-edge-vs-python-")
    models = a.model
    if not models:
        subprocess.run([sys.executable, os.path.join(ROOT, "runtime/tests/fixtures/make_models.py"), "models", tmp], check=True)
        models = [os.path.join(tmp, "rgb32.onnx"), os.path.join(tmp, "slow.onnx")]
    image = a.image
    if not image:
        from PIL import Image
        import numpy as np

        rng = np.random.default_rng(0)
        image = os.path.join(tmp, "photo.png")
        Image.fromarray(rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)).save(image)

    site = sysconfig.get_paths()["purelib"]
    py_pkgs = [os.path.join(site, d) for d in os.listdir(site)
               if d.split("-")[0].split(".")[0].lower() in ("onnxruntime", "numpy", "pil", "pillow")]
    py_bytes = du(py_pkgs)
    stdlib = sysconfig.get_paths()["stdlib"]
    interp = du([stdlib]) - du([os.path.join(stdlib, "site-packages")]) + os.path.getsize(os.path.realpath(sys.executable))
    edge_bytes = du([a.bundle])
    print(f"machine: {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}; threads {a.threads}; rounds {a.rounds}")
    print(f"footprint: bundle {edge_bytes / 1e6:.1f} MB vs onnxruntime+numpy+pillow {py_bytes / 1e6:.1f} MB "
          f"(ratio {edge_bytes / py_bytes:.3f}); the Python interpreter + stdlib add {interp / 1e6:.1f} MB "
          f"(ratio with it {edge_bytes / (py_bytes + interp):.3f})")
    for m in models:
        res, out = measure(m, image, a.bundle, a.rounds, a.threads)
        med = {k: (statistics.median(s for s, _ in v), statistics.median(r for _, r in v)) for k, v in res.items()}
        (es, er), (ps, pr) = med["edge"], med["python"]
        print(f"{os.path.basename(m)}: cold start to first prediction edge {es * 1e3:.0f} ms vs python {ps * 1e3:.0f} ms "
              f"(ratio {es / ps:.2f}, edge min-max {min(s for s, _ in res['edge']) * 1e3:.0f}-{max(s for s, _ in res['edge']) * 1e3:.0f}, "
              f"python {min(s for s, _ in res['python']) * 1e3:.0f}-{max(s for s, _ in res['python']) * 1e3:.0f}); "
              f"peak RSS edge {er / 1e6:.1f} MB vs python {pr / 1e6:.1f} MB (ratio {er / pr:.2f}); "
              f"top-1 edge {out['edge']} python {out['python']}")


if __name__ == "__main__":
    main()
