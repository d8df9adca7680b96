"""Import the official code (BryanPlummer/SSN, piotr-teterwak/SuperWeights) from a checkout given by path.

Nothing of the official code is copied or committed: ``import_official(path)`` puts the checkout on
``sys.path`` just long enough to import its ``models`` package, under a private name per checkout
(both repos call their package ``models``). ``cpu_device_lookups()`` is the only patch: the official
SuperWeights code moves tensors with ``.to(x.get_device())``, which is -1 for a CPU tensor and fails;
inside the context ``get_device()`` of a CPU tensor answers ``"cpu"``. Nothing else is changed.
"""

from __future__ import annotations

import contextlib
import importlib
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Iterator

import torch

from ..errors import ConfigError

_LOADED: dict[str, ModuleType] = {}


def import_official(path: str | Path, submodule: str) -> ModuleType:
    """``<checkout>/models/<submodule>.py`` as a module (e.g. ``wrn`` for SSN, ``swrn`` for SuperWeights)."""
    root = Path(path).expanduser().resolve()
    if not (root / "models" / f"{submodule}.py").is_file():
        raise ConfigError(f"official code: {root} has no models/{submodule}.py; give the path of a checkout of "
                          "BryanPlummer/SSN (models/wrn.py) or piotr-teterwak/SuperWeights (models/swrn.py).")
    key = f"{root}:{submodule}"
    if key in _LOADED:
        return _LOADED[key]
    saved = {name: mod for name, mod in sys.modules.items() if name == "models" or name.startswith("models.")}
    for name in saved:
        del sys.modules[name]
    sys.path.insert(0, str(root))
    try:
        with contextlib.redirect_stdout(sys.stderr):
            module = importlib.import_module(f"models.{submodule}")
    finally:
        sys.path.remove(str(root))
        for name in [n for n in sys.modules if n == "models" or n.startswith("models.")]:
            del sys.modules[name]
        sys.modules.update(saved)
    _LOADED[key] = module
    return module


@contextlib.contextmanager
def cpu_device_lookups() -> Iterator[None]:
    """``tensor.get_device()`` answers ``"cpu"`` for CPU tensors (instead of -1) while inside."""
    original = torch.Tensor.get_device
    if getattr(original, "_npas_cpu_patch", False):  # already inside one: nothing to add
        yield
        return

    def get_device(self: torch.Tensor):
        index = original(self)
        return "cpu" if index < 0 else index

    get_device._npas_cpu_patch = True  # type: ignore[attr-defined]
    torch.Tensor.get_device = get_device  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.Tensor.get_device = original  # type: ignore[method-assign]


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """The official constructors print their configuration; keep stdout for our tables."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


class float64:
    """Default dtype float64 inside: the official banks are ``torch.Tensor(n)`` (the default dtype), and in
    float32 two exact orders of operations part at ~1e-7, which training amplifies."""

    def __enter__(self):
        self.previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)

    def __exit__(self, *exc):
        torch.set_default_dtype(self.previous)


def checkout_commit(repo: str | Path) -> str:
    """The commit of an official checkout, recorded beside every trace taken from it."""
    r = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True)
    return r.stdout.strip() or "(not a git checkout)"
