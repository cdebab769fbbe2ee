"""Pretrained-checkpoint stand-ins for `finetune.rs`: state dicts as timm and torchvision save
them (random weights, as the peer tests use), plus timm's own adaptations of them.

    $LKD_PYTHON trainer/tests/finetune_peers.py --out DIR

DIR/timm_resnet18.pth        timm.create_model("resnet18"): 1000 classes, 3 channels
DIR/tv_resnet18.pth          torchvision.models.resnet18(): 1000 classes, 3 channels
DIR/timm_resnet18_1ch.pth    timm resnet18 with in_chans=1, 1000 classes
DIR/timm_vit.pth             timm VisionTransformer, 32x32 images, 4x4 patches (8x8 grid),
                             dim 64, depth 3, 4 heads, 100 classes, 3 channels
DIR/expected.safetensors     what timm makes of them for our 10-class models:
  resnet18_stem_1ch   adapt_input_conv(1, timm_resnet18 conv1.weight)
  resnet18_stem_3ch   adapt_input_conv(3, timm_resnet18_1ch conv1.weight, base_chans=1)
  vit_stem_1ch        adapt_input_conv(1, patch_embed.proj.weight)
  vit_pos_embed_7x7   resample_abs_pos_embed(pos_embed, [7, 7], num_prefix_tokens=1)

Pinned: torch 2.11.0, timm 1.0.31, torchvision 0.26.0 (the project venv).
"""

import argparse
import os

import timm
import torch
import torchvision.models
from safetensors.torch import save_file
from timm.layers import resample_abs_pos_embed
from timm.models._manipulate import adapt_input_conv
from timm.models.vision_transformer import VisionTransformer


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    out = p.parse_args().out
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)

    resnet = timm.create_model("resnet18", pretrained=False)
    torch.save(resnet.state_dict(), os.path.join(out, "timm_resnet18.pth"))
    torch.save(torchvision.models.resnet18().state_dict(), os.path.join(out, "tv_resnet18.pth"))
    resnet_1ch = timm.create_model("resnet18", pretrained=False, in_chans=1)
    torch.save(resnet_1ch.state_dict(), os.path.join(out, "timm_resnet18_1ch.pth"))

    vit = VisionTransformer(
        img_size=32, patch_size=4, in_chans=3, num_classes=100, embed_dim=64, depth=3,
        num_heads=4, mlp_ratio=4.0,
    )
    with torch.no_grad():
        # Position embeddings start at zeros + trunc-normal 0.02: make the grid's pattern large
        # enough that a resampling slip shows.
        vit.pos_embed.normal_()
    torch.save(vit.state_dict(), os.path.join(out, "timm_vit.pth"))

    expected = {
        "resnet18_stem_1ch": adapt_input_conv(1, resnet.conv1.weight.detach()),
        "resnet18_stem_3ch": adapt_input_conv(3, resnet_1ch.conv1.weight.detach(), base_chans=1),
        "vit_stem_1ch": adapt_input_conv(1, vit.patch_embed.proj.weight.detach()),
        "vit_pos_embed_7x7": resample_abs_pos_embed(
            vit.pos_embed.detach(), [7, 7], num_prefix_tokens=1
        ),
    }
    save_file({k: v.contiguous() for k, v in expected.items()},
              os.path.join(out, "expected.safetensors"))


if __name__ == "__main__":
    main()
