"""PyTorch reference for the ERF measurement (RepLKNet/SLaK `erf` scripts): per image, the
gradient of the sum of the ReLU'd centre pixel of the last stage w.r.t. the input, ReLU'd and
summed over channels; averaged over images; log10(x + 1), max-normalised; area ratios from the
smallest centred square holding a share t of the total.

Usage: python erf.py --preset P --size S --images N --out DIR
Writes DIR/checkpoint.pth (random weights, official keys), DIR/input.safetensors and
DIR/erf.safetensors (`map`, `ratios` for t = 0.2, 0.3, 0.5, 0.99).
"""
import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
import models  # noqa: E402
from make_case import write_safetensors  # noqa: E402


def get_rectangle(data, thresh):
    h, w = data.shape
    all_sum = np.sum(data)
    for i in range(1, h // 2):
        selected = data[h // 2 - i : h // 2 + 1 + i, w // 2 - i : w // 2 + 1 + i]
        if np.sum(selected) / all_sum > thresh:
            return (i * 2 + 1) / h * (i * 2 + 1) / w
    return 1.0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--preset", required=True)
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--images", type=int, default=3)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    torch.manual_seed(0)
    model = models.build(a.preset)
    models.randomize_(model)
    model.eval()
    os.makedirs(a.out, exist_ok=True)
    torch.save(model.state_dict(), os.path.join(a.out, "checkpoint.pth"))
    chans, _, _ = models.input_shape(a.preset)
    x = torch.randn(a.images, chans, a.size, a.size)
    total = None
    for i in range(a.images):
        sample = x[i : i + 1].clone().requires_grad_(True)
        feats = model(sample, taps=True)
        last = [k for k in feats if k.startswith("stage")][-1]
        out = feats[last]
        centre = torch.nn.functional.relu(out[:, :, out.shape[2] // 2, out.shape[3] // 2]).sum()
        (grad,) = torch.autograd.grad(centre, sample)
        contrib = torch.nn.functional.relu(grad).sum((0, 1)).numpy().astype(np.float64)
        total = contrib if total is None else total + contrib
    mean = total / a.images
    data = np.log10(mean + 1)
    data = data / np.max(data)
    ratios = np.array([get_rectangle(data, t) for t in (0.2, 0.3, 0.5, 0.99)], dtype=np.float32)
    write_safetensors(os.path.join(a.out, "input.safetensors"), {"input": x.numpy()})
    write_safetensors(os.path.join(a.out, "erf.safetensors"), {"map": data.astype(np.float32), "ratios": ratios})


if __name__ == "__main__":
    main()
