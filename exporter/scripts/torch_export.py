"""Exports the PyTorch reference model with given weights through `torch.onnx.export`
(TorchScript exporter, opset 17, dynamic batch): the baseline the export bench compares against.

    python exporter/scripts/torch_export.py --preset convnext_tiny --weights W.safetensors --out M.onnx
        [--override JSON]

Pinned: torch 2.11.0 (the project venv). Weights are a safetensors file with official keys;
it is read with numpy, so the `safetensors` package is not needed.
"""

import argparse
import json
import os
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "reference"))
import models  # noqa: E402

_DT = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "F64": np.float64}


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, h in header.items():
        if name == "__metadata__":
            continue
        a, b = h["data_offsets"]
        out[name] = torch.from_numpy(np.frombuffer(data[a:b], dtype=_DT[h["dtype"]]).reshape(h["shape"]).copy())
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--preset", required=True)
    p.add_argument("--override", default="{}")
    p.add_argument("--weights", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    overrides = json.loads(a.override)
    model = models.build(a.preset, overrides).eval()
    model.load_state_dict(read_safetensors(a.weights), strict=True)
    x = torch.randn(1, *models.input_shape(a.preset, overrides))
    torch.onnx.export(
        model, (x,), a.out, opset_version=17, dynamo=False, input_names=["pixels"], output_names=["logits"],
        dynamic_axes={"pixels": {0: "N"}, "logits": {0: "N"}},
    )
    print(f"{a.preset}: torch.onnx.export -> {a.out}")


if __name__ == "__main__":
    main()
