"""Writes one golden case for checkpoint and parity tests.

    python tests/reference/make_case.py --preset slak_proxy --out DIR [--override JSON]
        [--wrap none|model|model_ema|state_dict] [--module-prefix] [--batch 2] [--seed 0]
        [--dtype float32|float16|bfloat16|float64] [--views] [--parameters]
        [--protocol 2] [--legacy-format] [--train-mode-check]
    python tests/reference/make_case.py --cases '[["--preset", "vit_proxy", "--out", "D1"], ...]'

DIR/checkpoint.pth      torch.save archive, official key layout, wrapped as asked
DIR/state.safetensors   the same weights, unwrapped, unprefixed, float32/int64 (the truth)
DIR/input.safetensors   `input`: float32 [batch, in_chans, H, W]
DIR/output.safetensors  eval-mode `logits`, `pre_logits`, `stage1`..: float32
DIR/output_train.safetensors  (--train-mode-check) the same in train mode (batch statistics)
DIR/case.json           the arguments and resolved config

Pinned: torch 2.11.0, numpy 2.x (the project venv). safetensors files are written with numpy,
so the `safetensors` Python package is not needed.
"""

import argparse
import copy
import json
import os
import struct
import sys
from collections import OrderedDict

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import models  # noqa: E402

_ST_DTYPES = {np.dtype("float32"): "F32", np.dtype("int64"): "I64", np.dtype("float16"): "F16", np.dtype("float64"): "F64"}


def write_safetensors(path, tensors):
    """safetensors: u64 LE header length, JSON header {name: {dtype, shape, data_offsets}},
    then the raw little-endian bytes in header order."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        a = np.asarray(tensors[name])  # not ascontiguousarray: it turns 0-d into 1-d
        if a.dtype not in _ST_DTYPES:
            raise TypeError(f"{name}: unsupported dtype {a.dtype}")
        raw = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _ST_DTYPES[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def to_numpy(t):
    t = t.detach().cpu()
    if t.is_floating_point():
        return t.float().numpy()
    return t.long().numpy()


def as_views(sd):
    """Same values, non-trivial layouts: tensors with 2+ dims become transposed views
    (non-contiguous strides), 1-D float tensors become slices of one shared storage
    (non-zero storage offsets)."""
    out = OrderedDict()
    flat_keys = [k for k, v in sd.items() if v.dim() == 1 and v.is_floating_point()]
    shared = torch.cat([sd[k] for k in flat_keys]) if flat_keys else None
    offset = 0
    for k, v in sd.items():
        if k in flat_keys:
            out[k] = shared[offset:offset + v.numel()]
            offset += v.numel()
        elif v.dim() >= 2:
            out[k] = v.transpose(0, 1).contiguous().transpose(0, 1)
            assert not out[k].is_contiguous() or v.shape[0] == 1 or v.shape[1] == 1
        else:
            out[k] = v
    return out


def optimizer_state(model):
    """An AdamW `state_dict()` look-alike (int keys, tuples, nested tensors); built by hand
    because constructing a torch optimizer imports torch._dynamo (seconds)."""
    params = list(model.parameters())
    state = {i: {"step": torch.tensor(7.0), "exp_avg": torch.randn_like(p), "exp_avg_sq": torch.rand_like(p)}
             for i, p in enumerate(params[:3])}
    group = {"lr": 4e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.05, "amsgrad": False,
             "maximize": False, "foreach": None, "capturable": False, "differentiable": False, "fused": None,
             "params": list(range(len(params)))}
    return {"state": state, "param_groups": [group]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", required=True, choices=sorted(models.PRESETS))
    p.add_argument("--override", default="{}", help="JSON object with ModelConfig override fields")
    p.add_argument("--out", required=True)
    p.add_argument("--wrap", default="model", choices=["none", "model", "model_ema", "state_dict"])
    p.add_argument("--module-prefix", action="store_true", help="prefix every key with `module.` (DDP)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16", "float64"],
                   help="dtype of the floating tensors in checkpoint.pth (weights are rounded to it first)")
    p.add_argument("--views", action="store_true", help="save transposed views and shared-storage slices")
    p.add_argument("--parameters", action="store_true", help="save nn.Parameter objects, not plain tensors")
    p.add_argument("--protocol", type=int, default=2, help="pickle protocol for torch.save")
    p.add_argument("--legacy-format", action="store_true", help="pre-1.6 non-zip torch.save format")
    p.add_argument("--train-mode-check", action="store_true",
                   help="also write train-mode outputs and require them to differ from eval mode")
    a = p.parse_args(argv)

    overrides = json.loads(a.override)
    torch.manual_seed(a.seed)
    g = torch.Generator().manual_seed(a.seed)
    model = models.build(a.preset, overrides)
    models.randomize_(model, g)
    model.eval()

    dtype = getattr(torch, a.dtype)
    with torch.no_grad():
        # Round to the checkpoint dtype first so outputs are those of the saved weights.
        for t in list(model.parameters()) + [b for b in model.buffers() if b.is_floating_point()]:
            t.copy_(t.to(dtype).float())
    sd = model.state_dict()
    truth = {k: to_numpy(v) for k, v in sd.items()}

    c, h, w = models.input_shape(a.preset, overrides)
    x = torch.randn(a.batch, c, h, w, generator=g)
    with torch.no_grad():
        outs = model(x, taps=True)
    outputs = {k: to_numpy(v) for k, v in outs.items()}

    os.makedirs(a.out, exist_ok=True)
    if a.train_mode_check:
        train_model = copy.deepcopy(model).train()
        with torch.no_grad():
            train_outs = {k: to_numpy(v) for k, v in train_model(x, taps=True).items()}
        diff = float(np.abs(train_outs["logits"] - outputs["logits"]).max())
        has_bn = any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
        if has_bn and diff < 1e-3:
            sys.exit(f"train and eval logits agree ({diff:.2e}): BatchNorm statistics do not matter in this case")
        write_safetensors(os.path.join(a.out, "output_train.safetensors"), train_outs)
        print(f"train-mode check: max |logits train - eval| = {diff:.3e}")

    saved = OrderedDict((k, v.to(dtype) if v.is_floating_point() else v) for k, v in sd.items())
    if a.views:
        saved = as_views(saved)
    if a.parameters:
        saved = OrderedDict((k, torch.nn.Parameter(v, requires_grad=v.is_floating_point())) for k, v in saved.items())
    if a.module_prefix:
        saved = OrderedDict(("module." + k, v) for k, v in saved.items())
    # Keep the `_metadata` attribute real state dicts carry (pickled as a BUILD on the dict).
    saved._metadata = sd._metadata
    if a.wrap == "none":
        ckpt = saved
    elif a.wrap == "model":
        # As the official training scripts save: model, optimizer, epoch, args (a Namespace).
        ckpt = {"model": saved, "optimizer": optimizer_state(model), "epoch": 7,
                "args": argparse.Namespace(model=a.preset, lr=4e-3, input_size=h, drop_path=0.1, use_amp=False, kernel_size=[51, 49, 47, 13, 5]),
                "scaler": {"scale": 65536.0, "growth_factor": 2.0, "_growth_tracker": 0}}
    elif a.wrap == "model_ema":
        ckpt = {"model_ema": saved, "epoch": 7}
    else:
        ckpt = {"state_dict": saved, "epoch": 7}

    torch.save(ckpt, os.path.join(a.out, "checkpoint.pth"), pickle_protocol=a.protocol,
               _use_new_zipfile_serialization=not a.legacy_format)
    write_safetensors(os.path.join(a.out, "state.safetensors"), truth)
    write_safetensors(os.path.join(a.out, "input.safetensors"), {"input": x.numpy()})
    write_safetensors(os.path.join(a.out, "output.safetensors"), outputs)
    with open(os.path.join(a.out, "case.json"), "w") as f:
        json.dump({"args": vars(a), "config": models.resolve(a.preset, overrides),
                   "torch": torch.__version__, "numpy": np.__version__}, f, indent=1)
    scale = float(np.abs(outputs["logits"]).max())
    print(f"{a.preset}: {len(truth)} tensors, logits max |.| {scale:.3f} -> {a.out}")


if __name__ == "__main__":
    # `--cases JSON`: a list of argument lists, run in one process (torch imports once).
    if len(sys.argv) == 3 and sys.argv[1] == "--cases":
        for case_argv in json.loads(sys.argv[2]):
            main(case_argv)
    else:
        main()
