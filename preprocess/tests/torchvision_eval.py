"""Reference eval preprocessing with PIL + torchvision (pinned: torchvision 0.26.0, Pillow 13).

usage: torchvision_eval.py OUT < cases.json
cases.json is a list of {"size", "crop_pct", "interpolation", "channels", "mean", "std",
"files"}. Writes the float32 CHW tensors of every case's files, concatenated in order, to OUT.
Mirrors timm's `transforms_imagenet_eval` for a square size: Resize(floor(size / crop_pct)),
CenterCrop(size), ToTensor, Normalize; each source is converted to "L" or "RGB" first.
"""
import json
import math
import sys

import numpy as np
from PIL import Image
from torchvision import transforms
from torchvision.transforms import InterpolationMode

tensors = []
for case in json.load(sys.stdin):
    size, crop_pct = case["size"], case["crop_pct"]
    tf = transforms.Compose([
        transforms.Resize(math.floor(size / crop_pct), interpolation=InterpolationMode(case["interpolation"])),
        transforms.CenterCrop(size),
        transforms.ToTensor(),
        transforms.Normalize(case["mean"], case["std"]),
    ])
    for path in case["files"]:
        img = Image.open(path).convert("L" if case["channels"] == 1 else "RGB")
        tensors.append(tf(img).numpy().astype(np.float32).ravel())
np.concatenate(tensors).tofile(sys.argv[1])
