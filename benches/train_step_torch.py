"""The training steps of benches/train.rs written in PyTorch eager, on the same libtorch.

nano, tiny: the distillation step — student forward in train mode, teacher forward in eval mode
under no_grad, NKD loss (T = 1, alpha = 1), backward, AdamW (decay on weights of rank >= 2),
zero_grad. slak_train: the large-kernel teacher's own supervised step — forward in train mode,
cross-entropy with label smoothing 0.1, backward, AdamW, zero_grad. Models are the
official-structure references in tests/reference/models.py with the same presets.

Usage: python train_step_torch.py {nano,tiny,slak_train} [--iters N] [--warmup N] [--threads N] [--batch N]
Prints one JSON line of per-step seconds, the format `train --raw` prints.
"""

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
import models  # noqa: E402
from losses import nkd  # noqa: E402

CASES = {
    "nano": ("convnext_proxy", "slak_proxy", 128),
    "tiny": ("convnext_tiny", "slak_tiny", 8),
    "slak_train": ("slak_proxy", None, 128),
}
NKD_TEMPERATURE, NKD_ALPHA = 1.0, 1.0
LABEL_SMOOTHING = 0.1
LR, WEIGHT_DECAY = 1e-3, 0.05


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("case", choices=sorted(CASES))
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    s_name, t_name, batch = CASES[a.case]
    batch = a.batch or batch

    student = models.build(s_name).train()
    teacher = models.build(t_name).eval().requires_grad_(False) if t_name else None
    c, h, w = models.input_shape(s_name)
    x = torch.randn(batch, c, h, w)
    labels = torch.randint(0, models.resolve(s_name)["num_classes"], (batch,))
    decay = [p for p in student.parameters() if p.ndim >= 2]
    no_decay = [p for p in student.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}], lr=LR
    )

    names = ["step_s", "forward_s", "teacher_s", "backward_s", "optim_s"]
    times = {n: [] for n in names}
    for i in range(a.warmup + a.iters):
        t0 = time.perf_counter()
        logits = student(x)
        t1 = time.perf_counter()
        if teacher is not None:
            with torch.no_grad():
                t_logits = teacher(x)
        t2 = time.perf_counter()
        if teacher is not None:
            loss = nkd(logits, t_logits, labels, NKD_TEMPERATURE, NKD_ALPHA)
        else:
            loss = torch.nn.functional.cross_entropy(logits, labels, label_smoothing=LABEL_SMOOTHING)
        assert torch.isfinite(loss).item(), "non-finite loss"
        loss.backward()
        t3 = time.perf_counter()
        opt.step()
        opt.zero_grad()
        t4 = time.perf_counter()
        if i >= a.warmup:
            for n, v in zip(names, [t4 - t0, t1 - t0, t2 - t1, t3 - t2, t4 - t3]):
                times[n].append(round(v, 6))
    line = {"impl": "torch", "case": a.case, "batch": batch, "threads": a.threads, "workers": 0, **times}
    print(json.dumps(line, separators=(",", ":")))


if __name__ == "__main__":
    main()
