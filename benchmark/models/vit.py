"""Vision transformers (ViT, Dosovitskiy et al., ICLR 2021; DeiT, Touvron et al., ICML 2021), built as timm
builds ``VisionTransformer`` so that unique-parameter counts equal timm's (``vit_tiny_patch16_224``:
5,717,416; ``deit_small_patch16_224``: 22,050,664).

A ``patch x patch`` convolution with bias embeds the image (role ``stem``); a class token and a learned
position embedding (role ``embedding``, exempt from weight decay in the ViT recipes) are added; ``depth``
pre-norm blocks follow, each LayerNorm -> attention (``qkv``: embed -> 3 embed, ``proj``: embed -> embed, with
biases) -> residual, LayerNorm -> MLP (``fc1``: embed -> 4 embed, GELU, ``fc2``) -> residual; a final LayerNorm,
and the classifier reads the class token. LayerNorm eps is 1e-6 as in timm. No dropout and no stochastic
depth (timm's defaults; DeiT trains with drop-path 0.1, which this suite does not implement: see
configs/deit_imagenet.toml).

Every weight layer is a suite weight layer (``LayerFactory``), so every method provides them: all blocks sit
in stage 1 (block = its index), and each layer names its part of the block (``LayerSpec.op``). Weights start
as timm's do: truncated normal, std 0.02 (``LayerSpec.init = "trunc_normal"``), biases zero, the position
embedding N(0, 0.02) truncated, the class token N(0, 1e-6).

The input size is part of the architecture (the position embedding has one entry per patch), so a ViT is
registered for one image size (``ArchDef.image_size``) and a data set of another size is refused before
anything is built.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from .layers import LayerFactory


class Attention(nn.Module):
    def __init__(self, f: LayerFactory, prefix: str, dim: int, heads: int, block: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = f.linear(f"{prefix}.attn.qkv", dim, 3 * dim, stage=1, role="body", block=block, op="qkv",
                            init="trunc_normal")
        self.proj = f.linear(f"{prefix}.attn.proj", dim, dim, stage=1, role="body", block=block, op="proj",
                             init="trunc_normal")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    def __init__(self, f: LayerFactory, prefix: str, dim: int, heads: int, mlp_ratio: float, block: int) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(f, prefix, dim, heads, block)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.fc1 = f.linear(f"{prefix}.mlp.fc1", dim, hidden, stage=1, role="body", block=block, op="fc1",
                            init="trunc_normal")
        self.fc2 = f.linear(f"{prefix}.mlp.fc2", hidden, dim, stage=1, role="body", block=block, op="fc2",
                            init="trunc_normal")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class VisionTransformer(nn.Module):
    npas_roles = {"cls_token": "embedding", "pos_embed": "embedding"}

    def __init__(self, image_size: int, patch: int, dim: int, depth: int, heads: int, num_classes: int,
                 mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if image_size % patch:
            raise ConfigError(f"model.arch: patch size {patch} does not divide the image size {image_size}")
        if dim % heads:
            raise ConfigError(f"model.arch: embed width {dim} does not split into {heads} attention heads")
        if depth < 1:
            raise ConfigError(f"model.arch: a ViT needs depth >= 1, got {depth}")
        self.image_size, self.patch, self.dim, self.depth, self.heads = image_size, patch, dim, depth, heads
        self.num_classes = num_classes
        f = LayerFactory()
        self.patch_embed = f.conv("patch_embed", 3, dim, patch, patch, 0, role="stem", stage=0, bias=True,
                                  init="trunc_normal")
        tokens = (image_size // patch) ** 2 + 1
        self.cls_token = nn.Parameter(torch.empty(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.empty(1, tokens, dim))
        self.blocks = nn.Sequential(*[Block(f, f"blocks.{i}", dim, heads, mlp_ratio, i) for i in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = f.linear("head", dim, num_classes, stage=2, init="trunc_normal")
        self.layer_specs = tuple(f.specs)
        nn.init.trunc_normal_(self.pos_embed, std=0.02, a=-0.04, b=0.04)
        nn.init.normal_(self.cls_token, std=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            raise ConfigError(f"model.arch: this ViT takes {self.image_size}x{self.image_size} images (its position "
                              f"embedding has one entry per patch), got {x.shape[-2]}x{x.shape[-1]}")
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])
