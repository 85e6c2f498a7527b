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
from gzmorph.errors import ConfigError, GzmorphError


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
        p.add_argument("--config", metavar="FILE",
                       help="YAML or JSON file of option values, keyed by option name (batch-size: 128); "
                            "options given on the command line win")
        p.set_defaults(_run=mod.run)
    return parser


def _config_file(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


def _apply_config_file(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """Make the values of ``--config FILE`` the defaults of the command (before parsing:
    the file may give options the command requires)."""
    path = _config_file(argv)
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    if path is None or not argv or argv[0] not in commands:
        return
    from gzmorph.options import load_config_file

    values, command = load_config_file(path), commands[argv[0]]
    actions = {a.dest: a for a in command._actions if a.dest not in ("help", "config", "_run")}
    unknown = sorted(set(values) - set(actions))
    if unknown:
        raise ConfigError(f"{path}: no option {', '.join(unknown)} in `gzmorph {argv[0]}` "
                          f"(options: {', '.join(sorted(actions))})")
    for dest in values:
        actions[dest].required = False  # the file provides it
    command.set_defaults(**values)


# Errors a user can cause (bad paths, bad catalogs, bad settings) are our own types
# (gzmorph.errors): one line, exit 2.  Anything else is a bug and shows its traceback.
# Set GZMORPH_DEBUG=1 to get the traceback of a user error too.
USER_ERRORS = (GzmorphError,)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    try:
        _apply_config_file(parser, argv)
    except ConfigError as exc:
        print(f"gzmorph: error: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
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
