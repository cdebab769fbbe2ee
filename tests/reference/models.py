"""Reference PyTorch models for parity tests, written from the upstream structures rather than
from the Rust graphs, so a shared mistake cannot hide:

- SLaK: VITA-Group/SLaK `models/SLaK.py` (Liu et al., ICLR 2023), decomposed (`Decom`) kernels;
- ConvNeXt: facebookresearch/ConvNeXt `models/convnext.py` (Liu et al., CVPR 2022);
- ResNet: torchvision `models/resnet.py` (v1.5: stride on the 3x3 conv), plus a small stem;
- ViT: timm `models/vision_transformer.py` (class-token pooling, pre-norm blocks).

Module names equal the upstream checkpoint keys. `forward(x, taps=True)` returns the feature
taps the Rust graphs name: `stage1`..`stageN`, `pre_logits`, `logits`.

Presets mirror `models/src/families/*.rs`; `build(preset, overrides)` accepts the override
fields of the Rust `ModelConfig`.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class LayerNorm(nn.Module):
    """ConvNeXt/SLaK LayerNorm: `channels_last` over the last dim, `channels_first` over dim 1
    (computed by hand upstream, so it is here too)."""

    def __init__(self, dim, eps=1e-6, data_format="channels_last"):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps
        self.data_format = data_format
        self.normalized_shape = (dim,)

    def forward(self, x):
        if self.data_format == "channels_last":
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


# ---------------------------------------------------------------------------------------------
# SLaK


def conv_bn(dim, kernel):
    """Depthwise conv (no bias) + BatchNorm, padding kh//2, kw//2 as upstream `get_conv2d`."""
    kh, kw = kernel
    m = nn.Sequential()
    m.add_module("conv", nn.Conv2d(dim, dim, (kh, kw), 1, (kh // 2, kw // 2), groups=dim, bias=False))
    m.add_module("bn", nn.BatchNorm2d(dim, eps=1e-5))
    return m


class ReparamLargeKernelConv(nn.Module):
    """Decomposed large kernel: (k, s) + (s, k) [+ (s, s) when s < k], summed."""

    def __init__(self, dim, kernel, small):
        super().__init__()
        self.LoRA1 = conv_bn(dim, (kernel, small))
        self.LoRA2 = conv_bn(dim, (small, kernel))
        # Upstream only adds the small branch when it is strictly smaller.
        if small < kernel:
            self.small_conv = conv_bn(dim, (small, small))

    def forward(self, x):
        out = self.LoRA1(x) + self.LoRA2(x)
        if hasattr(self, "small_conv"):
            out = out + self.small_conv(x)
        return out


class SlakBlock(nn.Module):
    def __init__(self, dim, kernel, small, layer_scale):
        super().__init__()
        self.large_kernel = ReparamLargeKernelConv(dim, kernel, small)
        self.norm = LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(layer_scale * torch.ones(dim)) if layer_scale > 0 else None

    def forward(self, x):
        y = self.large_kernel(x)
        y = y.permute(0, 2, 3, 1)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        if self.gamma is not None:
            y = self.gamma * y
        return x + y.permute(0, 3, 1, 2)


class ConvNextBlock(nn.Module):
    def __init__(self, dim, kernel, layer_scale):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.norm = LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(layer_scale * torch.ones(dim)) if layer_scale > 0 else None

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        if self.gamma is not None:
            y = self.gamma * y
        return x + y.permute(0, 3, 1, 2)


class ConvNextLike(nn.Module):
    """The shared ConvNeXt/SLaK macro design: patchify stem, per-stage downsampling
    (LN + 2x2/2 conv), stages of blocks, mean-pool + LN + linear head."""

    def __init__(self, in_chans, num_classes, depths, dims, stem, make_block):
        super().__init__()
        self.downsample_layers = nn.ModuleList()
        self.downsample_layers.append(
            nn.Sequential(nn.Conv2d(in_chans, dims[0], stem, stem), LayerNorm(dims[0], 1e-6, "channels_first"))
        )
        for i in range(1, len(dims)):
            self.downsample_layers.append(
                nn.Sequential(LayerNorm(dims[i - 1], 1e-6, "channels_first"), nn.Conv2d(dims[i - 1], dims[i], 2, 2))
            )
        self.stages = nn.ModuleList(
            nn.Sequential(*[make_block(i, dims[i]) for _ in range(depths[i])]) for i in range(len(dims))
        )
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x, taps=False):
        out = {}
        for i, (ds, stage) in enumerate(zip(self.downsample_layers, self.stages)):
            x = stage(ds(x))
            out[f"stage{i + 1}"] = x
        pre = self.norm(x.mean([-2, -1]))
        logits = self.head(pre)
        if not taps:
            return logits
        out["pre_logits"] = pre
        out["logits"] = logits
        return out


def slak(in_chans, num_classes, depths, dims, kernels, small_kernel, stem, layer_scale=1e-6):
    if not (len(depths) == len(dims) == len(kernels)):
        raise ValueError(f"slak needs one dim and one kernel per stage: {depths} {dims} {kernels}")
    return ConvNextLike(
        in_chans, num_classes, depths, dims, stem, lambda i, d: SlakBlock(d, kernels[i], small_kernel, layer_scale)
    )


def convnext(in_chans, num_classes, depths, dims, kernel_size, stem, layer_scale=1e-6):
    if len(depths) != len(dims):
        raise ValueError(f"convnext needs one dim per stage: {depths} {dims}")
    return ConvNextLike(in_chans, num_classes, depths, dims, stem, lambda i, d: ConvNextBlock(d, kernel_size, layer_scale))


# ---------------------------------------------------------------------------------------------
# ResNet (torchvision names)


def conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


def conv1x1(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 1, stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * 4)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """`small_stem_stride=None`: 7x7/2 conv + 3x3/2 max pool; else one 3x3 conv of that stride."""

    def __init__(self, block, layers, widths, in_chans, num_classes, small_stem_stride=None):
        super().__init__()
        if len(layers) != len(widths):
            raise ValueError(f"resnet needs one width per layer: {layers} {widths}")
        self.inplanes = widths[0]
        if small_stem_stride is None:
            self.conv1 = nn.Conv2d(in_chans, self.inplanes, 7, 2, 3, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_chans, self.inplanes, 3, small_stem_stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if small_stem_stride is None else nn.Identity()
        self.num_layers = len(layers)
        for i, (n, w) in enumerate(zip(layers, widths)):
            setattr(self, f"layer{i + 1}", self._make_layer(block, w, n, 1 if i == 0 else 2))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[-1] * block.expansion, num_classes)

    def _make_layer(self, block, planes, blocks, stride):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride), nn.BatchNorm2d(planes * block.expansion)
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x, taps=False):
        out = {}
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.num_layers):
            x = getattr(self, f"layer{i + 1}")(x)
            out[f"stage{i + 1}"] = x
        pre = torch.flatten(self.avgpool(x), 1)
        logits = self.fc(pre)
        if not taps:
            return logits
        out["pre_logits"] = pre
        out["logits"] = logits
        return out


# ---------------------------------------------------------------------------------------------
# ViT (timm names)


class PatchEmbed(nn.Module):
    def __init__(self, patch, in_chans, dim):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch, patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, dim, heads, qkv_bias=True):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class VitBlock(nn.Module):
    def __init__(self, dim, heads, mlp_ratio):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, dim * mlp_ratio)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """`stages` evenly spaced taps: the token map after every depth/stages blocks, class token
    dropped, as [N, D, gh, gw]."""

    def __init__(self, in_chans, num_classes, input_size, patch, dim, depth, heads, mlp_ratio, stages):
        super().__init__()
        if input_size % patch or dim % heads or stages == 0 or depth % stages:
            raise ValueError(f"vit: bad geometry input {input_size} patch {patch} dim {dim} heads {heads} depth {depth} stages {stages}")
        self.grid = input_size // patch
        self.per_stage = depth // stages
        self.patch_embed = PatchEmbed(patch, in_chans, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid * self.grid, dim))
        self.blocks = nn.Sequential(*[VitBlock(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x, taps=False):
        out = {}
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if (i + 1) % self.per_stage == 0:
                n, _, d = x.shape
                out[f"stage{(i + 1) // self.per_stage}"] = x[:, 1:].transpose(1, 2).reshape(n, d, self.grid, self.grid)
        pre = self.norm(x)[:, 0]
        logits = self.head(pre)
        if not taps:
            return logits
        out["pre_logits"] = pre
        out["logits"] = logits
        return out


# ---------------------------------------------------------------------------------------------
# Presets (mirror models/src/families/mod.rs PRESETS and the family configs)

_SLAK_BIG = dict(kernels=[51, 49, 47, 13], small_kernel=5, stem=4)


def _widen(dims):
    return [int(d * 1.3) for d in dims]


PRESETS = {
    "slak_proxy": dict(family="slak", in_chans=1, num_classes=10, input_size=28,
                      depths=[1, 1, 2], dims=[24, 48, 96], kernels=[13, 7, 5], small_kernel=3, stem=2),
    "slak_tiny": dict(family="slak", in_chans=3, num_classes=1000, input_size=224,
                      depths=[3, 3, 9, 3], dims=_widen([96, 192, 384, 768]), **_SLAK_BIG),
    "slak_small": dict(family="slak", in_chans=3, num_classes=1000, input_size=224,
                       depths=[3, 3, 27, 3], dims=_widen([96, 192, 384, 768]), **_SLAK_BIG),
    "slak_base": dict(family="slak", in_chans=3, num_classes=1000, input_size=224,
                      depths=[3, 3, 27, 3], dims=_widen([128, 256, 512, 1024]), **_SLAK_BIG),
    "convnext_proxy": dict(family="convnext", in_chans=1, num_classes=10, input_size=28,
                          depths=[1, 1, 2], dims=[16, 32, 64], kernel_size=3, stem=2),
    "convnext_tiny": dict(family="convnext", in_chans=3, num_classes=1000, input_size=224,
                          depths=[3, 3, 9, 3], dims=[96, 192, 384, 768], kernel_size=7, stem=4),
    "convnext_small": dict(family="convnext", in_chans=3, num_classes=1000, input_size=224,
                           depths=[3, 3, 27, 3], dims=[96, 192, 384, 768], kernel_size=7, stem=4),
    "convnext_base": dict(family="convnext", in_chans=3, num_classes=1000, input_size=224,
                          depths=[3, 3, 27, 3], dims=[128, 256, 512, 1024], kernel_size=7, stem=4),
    "resnet_proxy": dict(family="resnet", in_chans=1, num_classes=10, input_size=28,
                        block="basic", depths=[1, 1, 1], dims=[16, 32, 64], small_stem_stride=2),
    "resnet18": dict(family="resnet", in_chans=3, num_classes=1000, input_size=224,
                     block="basic", depths=[2, 2, 2, 2], dims=[64, 128, 256, 512], small_stem_stride=None),
    "resnet50": dict(family="resnet", in_chans=3, num_classes=1000, input_size=224,
                     block="bottleneck", depths=[3, 4, 6, 3], dims=[64, 128, 256, 512], small_stem_stride=None),
    "vit_proxy": dict(family="vit", in_chans=1, num_classes=10, input_size=28,
                     patch=4, dim=64, depth=3, heads=4, mlp_ratio=4, stages=3),
    "vit_small": dict(family="vit", in_chans=3, num_classes=1000, input_size=224,
                      patch=16, dim=384, depth=12, heads=6, mlp_ratio=4, stages=4),
}

# Override fields of the Rust ModelConfig and the families they apply to (drop_path is accepted
# and ignored: it is the identity at inference).
_APPLIES = {
    "in_chans": {"slak", "convnext", "resnet", "vit"},
    "num_classes": {"slak", "convnext", "resnet", "vit"},
    "input_size": {"slak", "convnext", "resnet", "vit"},
    "drop_path": {"slak", "convnext", "resnet", "vit"},
    "depths": {"slak", "convnext", "resnet", "vit"},
    "dims": {"slak", "convnext", "resnet", "vit"},
    "kernel_size": {"convnext"},
    "kernels": {"slak"},
    "small_kernel": {"slak"},
}


def resolve(preset, overrides=None):
    """The preset's settings with `overrides` (Rust `ModelConfig` field names) applied."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset}; known: {', '.join(PRESETS)}")
    cfg = dict(PRESETS[preset])
    family = cfg["family"]
    for key, value in (overrides or {}).items():
        if key not in _APPLIES:
            raise ValueError(f"unknown override field {key}")
        if family not in _APPLIES[key]:
            raise ValueError(f"`{key}` does not apply to the {family} family ({preset})")
        if key == "drop_path":
            continue
        if family == "vit" and key == "depths":
            cfg["depth"], cfg["stages"] = sum(value), len(value)
        elif family == "vit" and key == "dims":
            cfg["dim"] = value[0]
        else:
            cfg[key] = value
    return cfg


def build(preset, overrides=None):
    c = resolve(preset, overrides)
    family = c["family"]
    if family == "slak":
        return slak(c["in_chans"], c["num_classes"], c["depths"], c["dims"], c["kernels"], c["small_kernel"], c["stem"])
    if family == "convnext":
        return convnext(c["in_chans"], c["num_classes"], c["depths"], c["dims"], c["kernel_size"], c["stem"])
    if family == "resnet":
        block = BasicBlock if c["block"] == "basic" else Bottleneck
        return ResNet(block, c["depths"], c["dims"], c["in_chans"], c["num_classes"], c["small_stem_stride"])
    return VisionTransformer(
        c["in_chans"], c["num_classes"], c["input_size"], c["patch"], c["dim"], c["depth"], c["heads"], c["mlp_ratio"], c["stages"]
    )


def input_shape(preset, overrides=None):
    c = resolve(preset, overrides)
    return c["in_chans"], c["input_size"], c["input_size"]


@torch.no_grad()
def randomize_(model, generator=None):
    """Weights that make a parity test meaningful: no exact zeros/ones, BatchNorm statistics
    away from identity, layer scale near 1 (not 1e-6, which would hide the block branch)."""
    g = generator

    def normal(t, std):
        t.copy_(torch.randn(t.shape, generator=g) * std)

    def uniform(t, lo, hi):
        t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)

    for name, m in model.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            uniform(m.weight, 0.5, 1.5)
            normal(m.bias, 0.1)
            normal(m.running_mean, 0.1)
            uniform(m.running_var, 0.5, 1.5)
            m.num_batches_tracked.fill_(int(torch.randint(1, 100000, (1,), generator=g)))
        elif isinstance(m, (nn.LayerNorm, LayerNorm)):
            uniform(m.weight, 0.5, 1.5)
            normal(m.bias, 0.1)
        elif isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            normal(m.weight, 1.0 / math.sqrt(fan_in))
            if m.bias is not None:
                normal(m.bias, 0.1)
    for name, p in model.named_parameters(recurse=True):
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "gamma":
            uniform(p, 0.5, 1.5)
        elif name in ("cls_token", "pos_embed"):
            normal(p, 0.5)
    return model
