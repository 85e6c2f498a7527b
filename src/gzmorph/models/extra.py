"""The ``share`` extra: its packages are imported on use, with one clear error when missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from gzmorph.errors import MissingExtraError

__all__ = ["INSTALL_HINT", "require"]

INSTALL_HINT = "pip install 'gzmorph[share]'"


def require(module: str, what: str) -> ModuleType:
    """Import ``module`` (a package of the ``share`` extra) or raise :class:`MissingExtraError`.

    ``what`` names the feature that needs it, for the message.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(f"{what} needs the Python package {module.split('.')[0]!r}, which is not "
                                f"installed: {INSTALL_HINT}") from exc
