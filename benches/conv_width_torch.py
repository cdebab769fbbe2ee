"""Issue 26 item 6: why a resnet18 with dims [1,1,1,1] trains slower than one with [8,8,8,8].

Times, in PyTorch eager on the libtorch lkd links (no lkd code involved), at 224² RGB input:
  - one training step (forward, cross-entropy, backward) of the reference ResNet
    (tests/reference/models.py, torchvision layout, BasicBlock [2,2,2,2]) with every width W;
  - the layer1 3×3 convolution alone (W→W channels at 56², forward + backward);
each with oneDNN (mkldnn) on, as libtorch picks by default, and off (ATen's native path), and
names the oneDNN implementation each convolution got (from ONEDNN_VERBOSE, in a child process).

Usage: $LKD_PYTHON benches/conv_width_torch.py [--widths 1,8] [--batch 32] [--iters 5]
       [--threads 2]
Prints one table line per case, then the oneDNN implementations seen per width.

Measured 2026-12-04 (AMD EPYC, 2 cores, avx512f/avx512_vnni/avx512_bf16, batch 16, 2 threads):
W=1 538 img/s vs W=8 323 img/s with oneDNN on (its default); every convolution of both runs a
jit:avx512_core (or avx2) kernel, none a reference one, so libtorch's kernel choice does not slow
C=1 down. oneDNN off (ATen's native path) is 8.5x slower at both widths. `lkd train --preset
resnet18 --set "model.dims=[W,W,W,W]"` on a 224² RGB folder (batch 16, 4 epochs) gave W=1
335 img/s, W=8 228 img/s on the same machine idle, and 19 vs 16 img/s while four other builds
loaded it: the issue's 25 img/s is not reproduced, and the executor adds nothing per width.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
import models  # noqa: E402


def timed(step, iters, warmup=1):
    for _ in range(warmup):
        step()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def train_step(width, batch):
    torch.manual_seed(0)
    net = models.ResNet(models.BasicBlock, [2, 2, 2, 2], [width] * 4, 3, 10).train()
    x = torch.randn(batch, 3, 224, 224)
    y = torch.randint(0, 10, (batch,))

    def step():
        net.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()

    return step


def conv_step(width, batch):
    x = torch.randn(batch, width, 56, 56, requires_grad=True)
    w = torch.randn(width, width, 3, 3, requires_grad=True)

    def step():
        x.grad = w.grad = None
        F.conv2d(x, w, padding=1).sum().backward()

    return step


def implementations(width, batch):
    """The oneDNN convolution implementations one training step of width W runs."""
    code = (
        "import sys; sys.argv=['x']; import conv_width_torch as c;"
        f"c.train_step({width}, {batch})()"
    )
    env = dict(os.environ, ONEDNN_VERBOSE="1", PYTHONPATH=os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    seen = {}
    for line in out.splitlines():
        f = line.split(",")
        # onednn_verbose,v1,primitive,exec,cpu,convolution,IMPL,PROP,...
        if len(f) > 7 and f[2] == "primitive" and f[3] == "exec" and f[5] == "convolution":
            key = f"{f[6]} ({f[7]})"
            seen[key] = seen.get(key, 0) + 1
    return seen


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--widths", default="1,8")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    widths = [int(w) for w in a.widths.split(",")]
    print(f"torch {torch.__version__}, {a.threads} thread(s), batch {a.batch}, median of {a.iters}")
    for name, make in [("resnet18 train step", train_step), ("layer1 conv fwd+bwd", conv_step)]:
        for wd in widths:
            row = []
            for mkldnn in (True, False):
                with torch.backends.mkldnn.flags(enabled=mkldnn):
                    s = timed(make(wd, a.batch), a.iters)
                row.append(s)
                unit = f"{a.batch / s:8.1f} img/s" if make is train_step else f"{s * 1e3:8.2f} ms"
                print(f"{name:22} W={wd:<3} oneDNN {'on ' if mkldnn else 'off'}: {s * 1e3:9.2f} ms/step {unit}")
            print(f"{name:22} W={wd:<3} oneDNN off/on time ratio {row[1] / row[0]:.3f}")
    for wd in widths:
        print(f"W={wd}: oneDNN convolution implementations in one step: {implementations(wd, a.batch)}")


if __name__ == "__main__":
    main()
