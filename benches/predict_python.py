"""What a user would run instead of `lkd-run predict`: Python onnxruntime + NumPy + Pillow, with the
preprocessing the model's lkd metadata describes (resize the shorter side to size / crop_pct,
centre crop, /255, mean/std; luma for one channel). Prints the top-1 per image, like lkd-run.

Usage: python benches/predict_python.py MODEL.onnx IMAGE... [--threads N]
"""
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image

RESAMPLE = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}


def preprocess(path, meta):
    h, w = (int(v) for v in meta["lkd.input_size"].split(","))
    channels = int(meta["lkd.channels"])
    crop = float(meta["lkd.crop_pct"])
    mean = np.array([float(v) for v in meta["lkd.mean"].split(",")], np.float32)
    std = np.array([float(v) for v in meta["lkd.std"].split(",")], np.float32)
    img = Image.open(path).convert("L" if channels == 1 else "RGB")
    short = round(min(h, w) / crop)
    iw, ih = img.size
    scale = short / min(iw, ih)
    img = img.resize((max(w, round(iw * scale)), max(h, round(ih * scale))), RESAMPLE[meta["lkd.interpolation"]])
    left, top = (img.size[0] - w) // 2, (img.size[1] - h) // 2
    img = img.crop((left, top, left + w, top + h))
    x = np.asarray(img, np.float32) / 255.0
    x = x[:, :, None] if x.ndim == 2 else x
    x = (x - mean) / std
    return x.transpose(2, 0, 1)[None]


def main(argv):
    threads = 0
    if "--threads" in argv:
        i = argv.index("--threads")
        threads = int(argv[i + 1])
        del argv[i : i + 2]
    model, images = argv[0], argv[1:]
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    s = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    meta = s.get_modelmeta().custom_metadata_map
    labels = __import__("json").loads(meta.get("lkd.labels", "[]"))
    name = s.get_inputs()[0].name
    for path in images:
        logits = s.run(None, {name: preprocess(path, meta)})[0][0]
        p = np.exp(logits - logits.max())
        p /= p.sum()
        k = int(p.argmax())
        print(f"{path}\n  {p[k]:>7.4f}  {labels[k] if k < len(labels) else f'class {k}'} ({k})", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
