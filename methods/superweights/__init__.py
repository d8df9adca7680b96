"""SuperWeight Networks (Teterwak et al., WACV 2024) as a npasbench method plugin."""

from .method import SuperWeightOptions, SuperWeights

__all__ = ["SuperWeightOptions", "SuperWeights"]
