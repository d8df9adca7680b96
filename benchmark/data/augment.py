"""Batched CIFAR augmentation and normalisation as tensor ops (no per-sample Python loop).

Equivalent, sample by sample, to torchvision's ``RandomCrop(32, padding=4)`` (zero padding),
``RandomHorizontalFlip()``, ``ToTensor()``, ``Normalize(mean, std)`` and then the official SSN
``Cutout`` (zero mask on the normalised tensor). Padding is done on the uint8 batch, so a pad pixel
is black (0) and becomes ``-mean/std`` after normalisation, exactly as in torchvision.
Random draws come from a CPU generator (cheap, B-sized) and are moved to the batch's device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

CROP_PADDING = 4


@dataclass
class AugmentDraws:
    """The random choices for one batch (kept separate so tests can check them)."""

    flip: torch.Tensor  # bool B: mirror this sample
    offset_y: torch.Tensor  # int64 B in [0, 2 * pad]: top of the crop window in the padded image
    offset_x: torch.Tensor  # int64 B in [0, 2 * pad]


def draw_flip_crop(batch: int, gen: torch.Generator, pad: int = CROP_PADDING) -> AugmentDraws:
    flip = torch.rand(batch, generator=gen) < 0.5
    offsets = torch.randint(0, 2 * pad + 1, (2, batch), generator=gen)
    return AugmentDraws(flip, offsets[0], offsets[1])


def flip_crop(images: torch.Tensor, draws: AugmentDraws, pad: int = CROP_PADDING) -> torch.Tensor:
    """Zero-pad by ``pad``, crop back to H x W at the drawn offsets, mirror where drawn.

    One gather: output pixel (i, j) of sample b reads padded pixel
    (oy + i, ox + (W-1-j if flip else j)) - crop then flip, in a single index computation.
    Works on any dtype/device; call it on the uint8 batch so the padding is black.
    """
    b, c, h, w = images.shape
    dev = images.device
    padded = F.pad(images, (pad, pad, pad, pad))
    hp, wp = h + 2 * pad, w + 2 * pad
    flip = draws.flip.to(dev)
    oy, ox = draws.offset_y.to(dev), draws.offset_x.to(dev)
    ar_h = torch.arange(h, device=dev)
    ar_w = torch.arange(w, device=dev)
    cols = torch.where(flip[:, None], (w - 1) - ar_w, ar_w) + ox[:, None]  # B x W
    rows = oy[:, None] + ar_h  # B x H
    lin = (rows[:, :, None] * wp + cols[:, None, :]).reshape(b, 1, h * w).expand(b, c, h * w)
    return torch.gather(padded.reshape(b, c, hp * wp), 2, lin).reshape(b, c, h, w)


def draw_cutout(batch: int, h: int, w: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample cutout centres, uniform in [0, H) x [0, W) (centres near the border clip the square)."""
    cy = torch.randint(0, h, (batch,), generator=gen)
    cx = torch.randint(0, w, (batch,), generator=gen)
    return cy, cx


def apply_cutout(x: torch.Tensor, size: int, cy: torch.Tensor, cx: torch.Tensor) -> torch.Tensor:
    """Zero (in place) a ``size`` x ``size`` square centred at (cy, cx), clipped at the borders.

    Rows ``cy - size//2 .. cy - size//2 + size - 1``: the official Cutout for even sizes (16); for odd
    sizes it keeps exactly ``size`` rows where the official code keeps ``size - 1``.
    """
    b, _, h, w = x.shape
    dev = x.device
    y0 = (cy.to(dev) - size // 2)[:, None]
    x0 = (cx.to(dev) - size // 2)[:, None]
    ar_h = torch.arange(h, device=dev)[None, :]
    ar_w = torch.arange(w, device=dev)[None, :]
    in_rows = (ar_h >= y0) & (ar_h < y0 + size)  # B x H
    in_cols = (ar_w >= x0) & (ar_w < x0 + size)  # B x W
    mask = in_rows[:, None, :, None] & in_cols[:, None, None, :]  # B x 1 x H x W
    return x.masked_fill_(mask, 0.0)


class Normalizer:
    """uint8 -> float32 ``(x / 255 - mean) / std`` as one multiply-subtract, per device."""

    def __init__(self, mean, std) -> None:
        self.mean = torch.tensor([float(m) for m in mean], dtype=torch.float64)
        self.std = torch.tensor([float(s) for s in std], dtype=torch.float64)
        if self.mean.shape != self.std.shape or bool((self.std <= 0).any()):
            raise ValueError(f"mean/std must have one positive std per channel, got mean={mean}, std={std}")
        self._cache: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def _consts(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._cache:
            scale = (1.0 / (255.0 * self.std)).to(torch.float32).view(1, -1, 1, 1).to(device)
            shift = (self.mean / self.std).to(torch.float32).view(1, -1, 1, 1).to(device)
            self._cache[device] = (scale, shift)
        return self._cache[device]

    def __call__(self, images: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
        scale, shift = self._consts(images.device)
        x = images.to(dtype=torch.float32, memory_format=torch.contiguous_format).mul_(scale).sub_(shift)
        # Converting the float result is ~3x faster on CPU than a channels_last uint8->float cast.
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

