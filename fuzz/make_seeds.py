"""Writes the seed inputs under corpus/ (run with the project venv: torch 2.11, onnx,
safetensors). Crashes the fuzzers find are added beside them by `make fuzz`, minimized."""
import os

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from safetensors.torch import save_file

here = os.path.dirname(os.path.abspath(__file__))
out = lambda target, name: os.path.join(here, "corpus", target, name)
torch.manual_seed(0)

sd = {"conv.weight": torch.randn(2, 1, 3, 3), "conv.bias": torch.zeros(2), "steps": torch.tensor(7),
      "fc.weight": torch.randn(3, 2).t(), "half": torch.randn(4).half(), "mask": torch.tensor([True, False])}
torch.save(sd, out("pth", "seed-state-dict"))
torch.save({"model": sd, "epoch": 3, "args": {"lr": 0.1}}, out("pth", "seed-wrapped-model"))
save_file({k: v.contiguous() for k, v in sd.items()}, out("safetensors", "seed-state-dict"))

# A tiny classifier with lkd metadata: Conv -> GlobalAveragePool -> Flatten -> Gemm.
w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, 1, 3, 3)).astype(np.float32), "w")
fc = numpy_helper.from_array(np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32), "fc")
nodes = [helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("GlobalAveragePool", ["c"], ["g"]),
         helper.make_node("Flatten", ["g"], ["f"]),
         helper.make_node("Gemm", ["f", "fc"], ["logits"], transB=1)]
graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])], [w, fc])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
for k, v in {"lkd.input_size": "8,8", "lkd.channels": "1", "lkd.crop_pct": "0.875", "lkd.interpolation": "bicubic",
             "lkd.mean": "0.5", "lkd.std": "0.25", "lkd.labels": '["a","b","c"]'}.items():
    model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
onnx.checker.check_model(model)
with open(out("onnx_metadata", "seed-tiny-classifier"), "wb") as f:
    f.write(model.SerializeToString())

# Images: a 4-byte preprocessing header, then the file.
fixtures = os.path.join(here, "..", "preprocess", "tests", "fixtures")
for i, name in enumerate(sorted(os.listdir(fixtures))):
    if name.endswith((".png", ".jpg")) and os.path.getsize(os.path.join(fixtures, name)) < 20000:
        with open(os.path.join(fixtures, name), "rb") as f:
            data = f.read()
        with open(out("image_decode", name), "wb") as f:
            f.write(bytes([i, 27 + i, i, 20 + i]) + data)
for name, head in {"grey_29x31": [0, 27, 1, 27, 29, 31, 0], "rgb_upscale": [5, 40, 2, 33, 7, 5, 1],
                   "strip": [3, 10, 0, 10, 96, 1, 1], "empty": [0, 5, 1, 5, 0, 9, 0]}.items():
    with open(out("preprocess_pixels", name), "wb") as f:
        f.write(bytes(head) + bytes(range(256)))

# A zip whose data.pkl header declares 16 bytes but inflates to 1 MiB (a zip bomb in small):
# the reader must stop at the declared size.
import io
import struct
import zipfile

buf = io.BytesIO()
with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("archive/data.pkl", b"\x80\x02}q\x00." + b"\x00" * (1 << 20))
raw = bytearray(buf.getvalue())
real = struct.pack("<I", 6 + (1 << 20))
for sig, at in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
    i = raw.find(sig)
    assert raw[i + at:i + at + 4] == real
    raw[i + at:i + at + 4] = struct.pack("<I", 16)
with open(out("pth", "seed-declared-size-too-small"), "wb") as f:
    f.write(bytes(raw))

# The runtime's metadata walker (openvino_metadata): the tiny classifier whole, and the ways a
# file can lie about its metadata. The runtime's own fixtures (gray28.onnx, rgb32.onnx, written by
# runtime/tests/fixtures/make_models.py) are copied beside these by hand.
os.makedirs(os.path.join(here, "corpus", "openvino_metadata"), exist_ok=True)
whole = model.SerializeToString()
entry = lambda k, v: onnx.StringStringEntryProto(key=k, value=v).SerializeToString()
field14 = lambda body: b"\x72" + bytes([len(body)]) + body  # tag (14 << 3 | 2), short length
variants = {
    "seed-tiny-classifier": whole,
    "seed-cut-in-metadata": whole[:len(whole) - 20],
    "seed-cut-in-graph": whole[:len(whole) // 2],
    "seed-repeated-key": whole + field14(entry("lkd.channels", "3")),
    "seed-entry-without-key": whole + field14(b"\x12\x01v"),
    "seed-length-past-end": whole + b"\x72\xff\xff\xff\x7f" + b"ab",
    "seed-metadata-only": field14(entry("lkd.arch", "slak")) + field14(entry("", "")),
}
for name, data in variants.items():
    with open(out("openvino_metadata", name), "wb") as f:
        f.write(data)
