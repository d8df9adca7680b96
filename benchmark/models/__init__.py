"""Backbones and their weight layers: WRN and ResNet families (``registry``: ``get_arch``, ``create_backbone``),
the layers that own or are given their weights (``layers``), and generated weights (``generated``).

Imports stay explicit (``from npasbench.models.registry import create_backbone``); this package imports nothing
itself, so importing one model module never builds the others.
"""
