"""Golden cases for `foreign_checkpoints.rs`: ConvNeXt checkpoints as other codebases save them.

    $LKD_PYTHON exporter/tests/foreign_checkpoints.py --out DIR

DIR/input.safetensors          `input`: float32 [2, 3, 64, 64]
DIR/<case>/checkpoint.pth      torch.save(model.state_dict()) of the peer's own module
DIR/<case>/output.safetensors  eval-mode `logits` of that module on the input
DIR/<case>/case.json           the lkd ModelConfig the case corresponds to
DIR/full_size_keys.json        {layout: {key: shape}} of timm's and torchvision's full-size
                               `convnext_tiny` (random init, never run)
DIR/param_counts.json          {model: learned parameters} of timm's convnext_atto / femto /
                               pico / nano and resnet34

Cases (small configs, 4 stages of depths 1/1/2/1 and widths 8/16/24/32, 7 classes, seed 0):
- `timm`: timm.models.convnext.ConvNeXt, as `timm.create_model("convnext_tiny", ...)` builds it;
- `torchvision`: torchvision.models.convnext.ConvNeXt with CNBlockConfig stages, as
  `torchvision.models.convnext_tiny` builds it;
- `slak7`, `slak7_small3`: the SLaK authors' distillation students (VITA-Group/SLaK
  `main_KD.py` builds `--model_s SLaK_tiny` through `models/SLaK.py`'s `SLaK` class with
  `kernel_size=[7, 7, 7, 7, 100]`, `width_factor=1.0`, `Decom=False`, `bn=True`). That module
  cannot be imported here (it needs the authors' CUDA extension `depthwise_conv2d_implicit_gemm`
  and is not packaged), so `SlakUndecomposed` below re-implements its structure and module names;
  `slak7_small3` adds the small 3x3 branch the same class builds when the last entry of
  `kernel_size` is smaller than a stage's kernel.
- `timm_atto`, `timm_resnet34`: full-size `timm.create_model("convnext_atto" | "resnet34")`
  (7 classes); atto's MLPs are 1x1 convolutions (`conv_mlp=True`).

Every parameter and BatchNorm statistic is re-drawn at random (layer scales near 1), so each
block changes the logits and a mis-mapped key shows. Pinned: torch 2.11.0, timm 1.0.31,
torchvision 0.26.0 (the project venv).
"""

import argparse
import json
import math
import os

import timm
import timm.models.convnext
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.models
import torchvision.models.convnext as tv_convnext
from safetensors.torch import save_file

DEPTHS = [1, 1, 2, 1]
DIMS = [8, 16, 24, 32]
CLASSES = 7
SIZE = 64


def randomize(model, seed):
    """Non-trivial values everywhere: weights ~ U(+-sqrt(3/fan_in)), norm/BN scales and layer
    scales in [0.5, 1.5], biases and BN means in [-0.2, 0.2], BN variances in [0.5, 1.5]."""
    g = torch.Generator().manual_seed(seed)

    def uniform(t, lo, hi):
        t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)

    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            leaf = name.rsplit(".", 1)[-1]
            if t.dim() >= 2 and leaf != "layer_scale":
                b = math.sqrt(3.0 / (t[0].numel()))
                uniform(t, -b, b)
            elif leaf in ("weight", "running_var", "gamma", "layer_scale"):
                uniform(t, 0.5, 1.5)
            else:
                uniform(t, -0.2, 0.2)
    return model.eval()


# --- The SLaK class without decomposition, as the authors' models/SLaK.py structures it ------


class LayerNorm(nn.Module):
    """SLaK/ConvNeXt LayerNorm: channels_last via F.layer_norm, channels_first by hand."""

    def __init__(self, dim, eps=1e-6, data_format="channels_last"):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps
        self.data_format = data_format

    def forward(self, x):
        if self.data_format == "channels_last":
            return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


def conv_bn(dim, kernel, padding):
    """Upstream `conv_bn`: a Sequential of a bias-free depthwise `conv` and a `bn`."""
    m = nn.Sequential()
    m.add_module("conv", nn.Conv2d(dim, dim, kernel, 1, padding, groups=dim, bias=False))
    m.add_module("bn", nn.BatchNorm2d(dim))
    return m


class ReparamLargeKernelConv(nn.Module):
    """Upstream `ReparamLargeKernelConv` with `Decom=False`: `lkb_origin` (k x k) plus
    `small_conv` (s x s) only when s < k."""

    def __init__(self, dim, kernel, small):
        super().__init__()
        self.lkb_origin = conv_bn(dim, kernel, kernel // 2)
        if small < kernel:
            self.small_conv = conv_bn(dim, small, small // 2)

    def forward(self, x):
        out = self.lkb_origin(x)
        if hasattr(self, "small_conv"):
            out = out + self.small_conv(x)
        return out


class Block(nn.Module):
    def __init__(self, dim, kernel, small):
        super().__init__()
        self.large_kernel = ReparamLargeKernelConv(dim, kernel, small)
        self.norm = LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(1e-6 * torch.ones(dim))

    def forward(self, x):
        y = self.large_kernel(x).permute(0, 2, 3, 1)
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + y.permute(0, 3, 1, 2)


class SlakUndecomposed(nn.Module):
    """Upstream `SLaK(..., kernel_size=[k1, k2, k3, k4, small], Decom=False, bn=True)`."""

    def __init__(self, in_chans, num_classes, depths, dims, kernel_size):
        super().__init__()
        self.downsample_layers = nn.ModuleList()
        self.downsample_layers.append(nn.Sequential(nn.Conv2d(in_chans, dims[0], 4, 4), LayerNorm(dims[0], 1e-6, "channels_first")))
        for i in range(3):
            self.downsample_layers.append(nn.Sequential(LayerNorm(dims[i], 1e-6, "channels_first"), nn.Conv2d(dims[i], dims[i + 1], 2, 2)))
        self.stages = nn.ModuleList(nn.Sequential(*[Block(dims[i], kernel_size[i], kernel_size[-1]) for _ in range(depths[i])]) for i in range(4))
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x):
        for ds, stage in zip(self.downsample_layers, self.stages):
            x = stage(ds(x))
        return self.head(self.norm(x.mean([-2, -1])))


# ---------------------------------------------------------------------------------------------


def cases():
    stages = [tv_convnext.CNBlockConfig(d, DIMS[i + 1] if i + 1 < len(DIMS) else None, n) for i, (d, n) in enumerate(zip(DIMS, DEPTHS))]
    small = {"depths": DEPTHS, "dims": DIMS, "num_classes": CLASSES, "input_size": SIZE}
    return {
        "timm": (lambda: timm.models.convnext.ConvNeXt(in_chans=3, num_classes=CLASSES, depths=DEPTHS, dims=DIMS), {"preset": "convnext_tiny", **small}),
        "torchvision": (lambda: tv_convnext.ConvNeXt(stages, num_classes=CLASSES), {"preset": "convnext_tiny", **small}),
        "slak7": (lambda: SlakUndecomposed(3, CLASSES, DEPTHS, DIMS, [7, 7, 7, 7, 100]), {"preset": "convnext_tiny_slak7", **small}),
        "slak7_small3": (lambda: SlakUndecomposed(3, CLASSES, DEPTHS, DIMS, [7, 7, 7, 7, 3]), {"preset": "convnext_tiny_slak7", "small_kernel": 3, **small}),
        # The compact models people deploy, at full size: timm's conv_mlp ConvNeXt and ResNet-34.
        "timm_atto": (lambda: timm.create_model("convnext_atto", num_classes=CLASSES), {"preset": "convnext_atto", "num_classes": CLASSES, "input_size": SIZE}),
        "timm_resnet34": (lambda: timm.create_model("resnet34", num_classes=CLASSES), {"preset": "resnet34", "num_classes": CLASSES, "input_size": SIZE}),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.manual_seed(0)
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    os.makedirs(args.out, exist_ok=True)
    save_file({"input": x}, os.path.join(args.out, "input.safetensors"))
    for i, (name, (make, config)) in enumerate(cases().items()):
        model = randomize(make(), seed=10 + i)
        with torch.no_grad():
            logits = model(x)
        d = os.path.join(args.out, name)
        os.makedirs(d, exist_ok=True)
        torch.save(model.state_dict(), os.path.join(d, "checkpoint.pth"))
        save_file({"logits": logits.contiguous()}, os.path.join(d, "output.safetensors"))
        with open(os.path.join(d, "case.json"), "w") as f:
            json.dump(config, f)
    full = {
        "timm ConvNeXt": timm.create_model("convnext_tiny", pretrained=False),
        "torchvision ConvNeXt": torchvision.models.convnext_tiny(weights=None),
    }
    keys = {layout: {k: list(v.shape) for k, v in m.state_dict().items()} for layout, m in full.items()}
    with open(os.path.join(args.out, "full_size_keys.json"), "w") as f:
        json.dump(keys, f)
    # Learned parameters (buffers excluded) of the ImageNet models as timm builds them.
    counts = {
        name: sum(p.numel() for p in timm.create_model(name, pretrained=False).parameters())
        for name in ["convnext_atto", "convnext_femto", "convnext_pico", "convnext_nano", "resnet34"]
    }
    with open(os.path.join(args.out, "param_counts.json"), "w") as f:
        json.dump(counts, f)


if __name__ == "__main__":
    main()
