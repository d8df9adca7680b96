"""NPAS methods, each a plugin on the method contract (registered on import)."""

from . import ssn, superweights  # noqa: F401
