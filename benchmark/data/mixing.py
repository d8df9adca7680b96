"""The training augmentations vision transformers need on CIFAR: an automatic policy per image (TrivialAugment,
RandAugment) and mixup / cutmix per batch (soft targets), each deterministic under the run's seed.

Why a module of its own: both kinds of loader (the in-memory one and the file pipelines) apply them at the same
point, on the batch of one (seed, epoch, batch, rank), whose generator also draws the flips and crops, so a
resumed run sees the same images. The policy runs torchvision's own ``TrivialAugmentWide`` / ``RandAugment``
(num_ops 2, magnitude 9, the DeiT/timm setting ``rand-m9``) per image on the uint8 batch, with torch's global
generator forked and seeded from the batch's generator (torchvision draws from the global one). Mixing follows
timm's ``Mixup`` per batch: with probability ``mix_prob`` one lambda ~ Beta(alpha, alpha) for the batch, mixup
or (when both are on) cutmix with probability 1/2, the partner the batch reversed, cutmix's lambda corrected to
the box's true area; targets become probability vectors, which the training step's cross-entropy (label
smoothing included) takes as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

POLICIES = ("none", "trivial", "randaugment")


@dataclass(frozen=True)
class ExtraAugment:
    """``data.auto_augment``, ``data.mixup_alpha``, ``data.cutmix_alpha``, ``data.mix_prob`` of one run."""

    auto_augment: str = "none"
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0
    num_classes: int = 0

    @property
    def active(self) -> bool:
        return self.auto_augment != "none" or self.mixes

    @property
    def mixes(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def policy(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """``images``: uint8 B x C x H x W; each image through the policy, seeded from ``gen``."""
        if self.auto_augment == "none":
            return images
        import torchvision.transforms.v2 as T

        op = T.TrivialAugmentWide() if self.auto_augment == "trivial" else T.RandAugment(num_ops=2, magnitude=9)
        seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        devices = [images.device] if images.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            return torch.stack([op(img) for img in images])

    def mix(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, integer labels) -> (mixed x, B x classes probability targets)."""
        target = F.one_hot(y, self.num_classes).to(x.dtype)
        if not self.mixes or float(torch.rand((), generator=gen)) >= self.mix_prob:
            return x, target
        cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or float(torch.rand((), generator=gen)) < 0.5)
        alpha = self.cutmix_alpha if cutmix else self.mixup_alpha
        lam = float(_beta(alpha, gen))
        if cutmix:
            h, w = x.shape[-2:]
            cut = (1.0 - lam) ** 0.5
            ch, cw = int(h * cut), int(w * cut)
            cy = int(torch.randint(0, h, (1,), generator=gen))
            cx = int(torch.randint(0, w, (1,), generator=gen))
            y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
            x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
            x = x.clone()
            x[..., y0:y1, x0:x1] = x.flip(0)[..., y0:y1, x0:x1]
            lam = 1.0 - (y1 - y0) * (x1 - x0) / float(h * w)
        else:
            x = x * lam + x.flip(0) * (1.0 - lam)
        return x, target * lam + target.flip(0) * (1.0 - lam)


def _beta(alpha: float, gen: torch.Generator) -> float:
    """One Beta(alpha, alpha) draw, G1 / (G1 + G2) of two Gamma(alpha) draws, from torch's global generator
    forked and seeded from ``gen`` (torch draws gamma variables from the global generator only)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=gen))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        a = torch._standard_gamma(torch.tensor([alpha, alpha], dtype=torch.float64))
    return float(a[0] / a.sum())
