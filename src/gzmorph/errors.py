"""The errors a user can cause, as our own exception types.

``gzmorph.cli`` prints these as one line (exit status 2); anything else is a bug and
shows its traceback.  Each type also derives from the built-in error it refines, so
``except ValueError`` in callers of the Python API keeps working.
"""

from __future__ import annotations

__all__ = ["GzmorphError", "ConfigError", "CatalogError", "RunError", "OutputError", "MissingExtraError",
           "InputNotFoundError"]


class GzmorphError(Exception):
    """Base of every error caused by the input or the settings rather than by a bug."""


class ConfigError(GzmorphError, ValueError):
    """A setting is invalid (a config field, a command-line option, a config file)."""


class CatalogError(GzmorphError, ValueError):
    """Bad input data: the message names the file and the row."""


class RunError(GzmorphError, ValueError):
    """A run directory is missing, incomplete, or already holds another run."""


class OutputError(GzmorphError, ValueError):
    """An output cannot be written or resumed (other settings, changed files)."""


class MissingExtraError(GzmorphError, ImportError):
    """An optional extra (e.g. ``gzmorph[ray]``) is needed but not installed."""


class InputNotFoundError(GzmorphError, FileNotFoundError):
    """A file or folder given as input does not exist (the message names it)."""
