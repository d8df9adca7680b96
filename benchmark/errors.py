"""Errors a user can fix. Every message names the offending field and says how to fix it."""

from __future__ import annotations


class NPASError(ValueError):
    """Base class for user-facing errors (bad config, bad input, impossible budget...).

    The CLI prints these as a single clear line and exits with ``exit_code`` (2 unless a subclass
    says otherwise), instead of a traceback.
    """

    exit_code = 2


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


class FolderBusy(NPASError):
    """Another process holds the run (or phase) folder's lock: one folder, one writer."""

    exit_code = 5


class StorageError(NPASError):
    """The operating system refused a write (full disk, quota, read-only or unwritable folder)."""
