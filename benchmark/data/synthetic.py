"""A synthetic image classification set: CIFAR-shaped, generated in memory, no download.

Used for smoke tests and CI, so it must be (1) deterministic - always generated from seed 0, so the
data never depends on the training seed; (2) fast - 6000 images in well under a second;
(3) learnable but not trivial, so a short training run shows a real learning signal without being
solved in one step. Each class has a smooth random prototype (random 4x4 colour grid upsampled
bilinearly); a sample is its class prototype at a random small translation, blended with a little
of another class's prototype, with a random brightness/contrast jitter and gaussian pixel noise,
quantised to uint8.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import DataConfig
from .registry import SourceData, register_dataset
from .splits import ImageSplit, channel_stats

SYNTHETIC_SEED = 0

# Difficulty knobs (tuned so nearest-class-mean gets well above chance but far from 100%).
_CLASS_AMPLITUDE = 0.18  # class-specific part of a prototype, on top of a shared background
_MIX_MAX = 0.50  # weight of the distractor class prototype, uniform in [0, _MIX_MAX]
_NOISE = 0.25  # per-pixel gaussian grain, shared by the channels (image units, 1.0 = full range)
_CONTRAST = (0.6, 1.4)
_BRIGHTNESS = 0.10


def _prototypes(g: torch.Generator, classes: int, big: int) -> torch.Tensor:
    """classes x 3 x big x big smooth images in roughly [0, 1]: shared background + class part."""
    background = torch.rand(1, 3, 4, 4, generator=g) * 0.5 + 0.25
    specific = (torch.rand(classes, 3, 4, 4, generator=g) - 0.5) * 2 * _CLASS_AMPLITUDE
    grid = background + specific
    return F.interpolate(grid, size=(big, big), mode="bilinear", align_corners=True)


def _shifted_bank(protos: torch.Tensor, size: int, shift: int) -> torch.Tensor:
    """classes x T x 3 x size x size: every prototype at each of the T = (2*shift+1)^2 translations.

    Small (6 MB for 10 classes at 32x32), and turns the per-sample translation into one row gather.
    """
    steps = range(2 * shift + 1)
    crops = [protos[:, :, oy : oy + size, ox : ox + size] for oy in steps for ox in steps]
    return torch.stack(crops, dim=1).contiguous()


def _samples(g: torch.Generator, bank: torch.Tensor, n: int) -> ImageSplit:
    classes, shifts = bank.shape[0], bank.shape[1]
    rows = bank.reshape(classes * shifts, *bank.shape[2:])
    labels = (torch.arange(n) % classes)[torch.randperm(n, generator=g)]  # balanced, shuffled
    other = (labels + torch.randint(1, classes, (n,), generator=g)) % classes
    weight = torch.rand(n, 1, 1, 1, generator=g) * _MIX_MAX
    shift = torch.randint(0, shifts, (n,), generator=g)  # same translation for both prototypes
    x = rows.index_select(0, labels * shifts + shift)
    x.mul_(1 - weight).add_(rows.index_select(0, other * shifts + shift).mul_(weight))
    contrast = torch.empty(n, 1, 1, 1).uniform_(*_CONTRAST, generator=g)
    brightness = torch.randn(n, 1, 1, 1, generator=g) * _BRIGHTNESS
    x.sub_(0.5).mul_(contrast).add_(0.5 + brightness)
    # Grain shared by the 3 channels: a third of the random draws (they dominate generation time).
    h, w = x.shape[2], x.shape[3]
    x.add_(torch.randn(n, 1, h, w, generator=g), alpha=_NOISE)
    images = x.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)
    return ImageSplit(images, labels)


def make_synthetic(classes: int, n_train: int, n_test: int, size: int, seed: int = SYNTHETIC_SEED):
    """(train, test) ImageSplits; identical for identical arguments."""
    g = torch.Generator().manual_seed(seed)
    shift = max(1, size // 10)  # max translation in pixels (3 at 32x32)
    bank = _shifted_bank(_prototypes(g, classes, size + 2 * shift), size, shift)
    train = _samples(g, bank, n_train)
    test = _samples(g, bank, n_test)
    return train, test


@register_dataset("synthetic")
def load_synthetic(cfg: DataConfig) -> SourceData:
    train, test = make_synthetic(cfg.synthetic_classes, cfg.synthetic_train, cfg.synthetic_test, cfg.synthetic_size)
    mean, std = channel_stats(train.images)
    return SourceData(
        train=train,
        test=test,
        num_classes=cfg.synthetic_classes,
        mean=mean,
        std=std,
        synthetic=True,
        source=f"synthetic(seed={SYNTHETIC_SEED}, classes={cfg.synthetic_classes}, size={cfg.synthetic_size})",
    )
