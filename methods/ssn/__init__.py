"""Shapeshifter Networks (Plummer et al., ICLR 2022) as a npasbench method plugin."""

from .method import SSN, SSNOptions

__all__ = ["SSN", "SSNOptions"]
