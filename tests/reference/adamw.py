"""PyTorch reference for AdamW: three steps on fixed tensors with per-tensor weight decay.

Usage: python adamw.py OUT.safetensors
"""
import sys

import os
import torch

sys.path.insert(0, os.path.dirname(__file__))

from make_case import write_safetensors


def main(out):
    torch.manual_seed(0)
    w = torch.randn(4, 3, requires_grad=True)
    b = torch.randn(4, requires_grad=True)
    grads = [(torch.randn(4, 3), torch.randn(4)) for _ in range(3)]
    res = {"w0": w.detach().clone().numpy(), "b0": b.detach().clone().numpy()}
    opt = torch.optim.AdamW([{"params": [w], "weight_decay": 0.05}, {"params": [b], "weight_decay": 0.0}], lr=1e-2)
    for i, (gw, gb) in enumerate(grads):
        for group in opt.param_groups:
            group["lr"] = 1e-2 * (i + 1)
        w.grad, b.grad = gw, gb
        opt.step()
        res[f"gw{i}"], res[f"gb{i}"] = gw.numpy(), gb.numpy()
    res["w3"], res["b3"] = w.detach().numpy(), b.detach().numpy()
    write_safetensors(out, res)


if __name__ == "__main__":
    main(sys.argv[1])
