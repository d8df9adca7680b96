"""Errors a user can fix. Every message names the offending field and says how to fix it."""

from __future__ import annotations


class NPASError(ValueError):
    """Base class for user-facing errors (bad config, bad input, impossible budget...).

    The CLI prints these as a single clear line and exits with status 2, instead of a traceback.
    """


class ConfigError(NPASError):
    """A config field or option is missing, unknown or of the wrong type."""


class RegistryError(NPASError):
    """Unknown or duplicate method / architecture / data-set name."""


class BudgetError(NPASError):
    """A parameter budget the method cannot represent (never silently overrun)."""


class DataError(NPASError):
    """A data set cannot be found or read."""


class CheckpointError(NPASError):
    """A checkpoint is missing, corrupt, or belongs to a different configuration."""
