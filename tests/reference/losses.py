"""PyTorch reference for the distillation losses (values and student gradients).

Usage: python losses.py OUT.safetensors
Writes the random inputs and, per loss, its value and d(loss)/d(student logits or map).
"""
import json
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F


def save_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        a = np.ascontiguousarray(t.detach().cpu().numpy())
        dtype = {np.float32: "F32", np.int64: "I64"}[a.dtype.type]
        b = a.tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def kd(s, t, labels, alpha=0.1, temp=1.0):
    kl = F.kl_div(F.log_softmax(s / temp, 1), F.log_softmax(t / temp, 1), reduction="batchmean", log_target=True)
    return alpha * temp * temp * kl + (1 - alpha) * F.cross_entropy(s, labels)


def nkd(logit_s, logit_t, gt_label, temp=1.0, gamma=1.5):
    # As in the NKD loss of the large-kernel distillation code.
    if gt_label.dim() > 1:
        label = torch.max(gt_label, dim=1, keepdim=True)[1]
    else:
        label = gt_label.view(len(gt_label), 1)
    n, c = logit_s.shape
    s_i = F.log_softmax(logit_s, dim=1)
    t_i = F.softmax(logit_t, dim=1)
    s_t = torch.gather(s_i, 1, label)
    t_t = torch.gather(t_i, 1, label).detach()
    loss_t = -(t_t * s_t).mean()
    mask = torch.ones_like(logit_s).scatter_(1, label, 0).bool()
    logit_s = logit_s[mask].reshape(n, -1)
    logit_t = logit_t[mask].reshape(n, -1)
    s_non = F.log_softmax(logit_s / temp, dim=1)
    t_non = F.softmax(logit_t / temp, dim=1)
    loss_non = -gamma * temp**2 * (t_non * s_non).sum(dim=1).mean()
    return loss_t + loss_non


def main(out):
    torch.manual_seed(0)
    n, c = 6, 10
    student = torch.randn(n, c) * 2
    teacher = torch.randn(n, c) * 2
    labels = torch.randint(0, c, (n,))
    soft = torch.softmax(torch.randn(n, c) * 3, 1)
    fs = torch.randn(n, 8, 5, 5)
    ft = torch.randn(n, 8, 7, 7)
    res = {"student": student, "teacher": teacher, "labels": labels, "soft": soft, "feat_s": fs, "feat_t": ft}

    def record(name, fn, x):
        x = x.clone().requires_grad_(True)
        v = fn(x)
        v.backward()
        res[name + ".value"] = v.detach().reshape(1)
        res[name + ".grad"] = x.grad

    record("ce_smooth", lambda s: F.cross_entropy(s, labels, label_smoothing=0.1), student)
    record("ce_soft", lambda s: torch.sum(-soft * F.log_softmax(s, -1), dim=-1).mean(), student)
    record("kd", lambda s: kd(s, teacher, labels, 0.1, 1.0), student)
    record("kd_t4", lambda s: kd(s, teacher, labels, 0.5, 4.0), student)
    record("nkd", lambda s: nkd(s, teacher, labels, 1.0, 1.5), student)
    record("nkd_soft_t2", lambda s: nkd(s, teacher, soft, 2.0, 1.0), student)

    def resized(s):
        return F.interpolate(s, size=ft.shape[-2:], mode="bilinear", align_corners=False)

    record("fd_smoothl1", lambda s: F.smooth_l1_loss(resized(s), ft, beta=2.0), fs)
    record("fd_mse", lambda s: F.mse_loss(resized(s), ft), fs)
    save_safetensors(out, res)


if __name__ == "__main__":
    main(sys.argv[1])
