"""The ``gzmorph`` command: a thin layer over the Python API.

Each subcommand lives in ``gzmorph/commands/<name>.py`` and defines ``HELP`` (one
line), ``add_arguments(parser)`` and ``run(args) -> int``; this module only
dispatches, so importing the CLI does not import torch-heavy modules until a
command runs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

import gzmorph.commands as _commands
from gzmorph import __version__
from gzmorph.errors import GzmorphError


def _command_modules():
    names = sorted(m.name for m in pkgutil.iter_modules(_commands.__path__) if not m.name.startswith("_"))
    return [(name.replace("_", "-"), importlib.import_module(f"gzmorph.commands.{name}")) for name in names]


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None (an override that keeps the preset's or the data's value)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or "%(default)" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gzmorph",
        description="Galaxy Zoo 2 morphology from galaxy images (Dieleman, Willett & Dambre 2015).",
    )
    parser.add_argument("--version", action="version", version=f"gzmorph {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, mod in _command_modules():
        p = sub.add_parser(name, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
                           formatter_class=_HelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


# Errors a user can cause (bad paths, bad catalogs, bad settings) are our own types
# (gzmorph.errors): one line, exit 2.  Anything else is a bug and shows its traceback.
# Set GZMORPH_DEBUG=1 to get the traceback of a user error too.
USER_ERRORS = (GzmorphError,)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as exc:
        if os.environ.get("GZMORPH_DEBUG"):
            raise
        print(f"gzmorph {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
