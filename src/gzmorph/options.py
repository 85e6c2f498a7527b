"""Command-line options generated from the typed config dataclasses.

A config's fields are typed and documented once, in the dataclass; this module turns
them into ``argparse`` options, so the CLI never retypes a default, a type or a set of
choices.  The help text of a field comes from the numpydoc ``Parameters`` section of
the class docstring (``tta : {"none", "rot", "paper"}`` also gives the choices), or
else from the comment after the field in the class body.  :func:`load_config_file`
reads the ``--config FILE`` (YAML or JSON) that every command accepts.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import textwrap
import typing
from pathlib import Path
from typing import Any, Iterable, Mapping

from gzmorph.config import Config, build
from gzmorph.errors import ConfigError

__all__ = ["FieldDoc", "field_docs", "add_config_options", "config_values", "load_config_file", "DataOptions",
           "add_data_options", "data_options"]


@dataclasses.dataclass(frozen=True)
class FieldDoc:
    """What the docs say about one field: help text and, for ``{...}`` types, the choices."""

    help: str = ""
    choices: tuple[str, ...] | None = None


def _numpydoc_params(doc: str) -> dict[str, FieldDoc]:
    lines = inspect.cleandoc(doc or "").splitlines()
    try:
        i = next(k for k, line in enumerate(lines) if line.strip() == "Parameters") + 2
    except StopIteration:
        return {}
    out: dict[str, FieldDoc] = {}
    while i < len(lines):
        line = lines[i]
        if not line or line[0].isspace():
            i += 1
            continue
        if i + 1 < len(lines) and lines[i + 1].strip() and set(lines[i + 1].strip()) == {"-"}:
            break  # the next section
        names, _, spec = line.partition(":")
        spec, text = spec.strip(), []
        i += 1
        while i < len(lines) and (not lines[i] or lines[i][0].isspace()):
            text.append(lines[i].strip())
            i += 1
        choices = tuple(re.findall(r'"([^"]*)"', spec)) if spec.startswith("{") else ()
        for name in names.split(","):
            out[name.strip()] = FieldDoc(" ".join(t for t in text if t), choices or None)
    return out


def _comments(cls: type) -> dict[str, FieldDoc]:
    """``name: type = default  # help`` comments of the class body."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    found = {}
    for line in source.splitlines():
        m = re.match(r"^\s+(\w+)\s*:[^#]*#\s*(.+)$", line)
        if m:
            found[m.group(1)] = FieldDoc(m.group(2).strip())
    return found


def _plain(text: str) -> str:
    """reST markup of the docstrings as plain text for ``--help``."""
    text = re.sub(r":\w+:`~?([^`<]+?)(?: <[^>]+>)?`", lambda m: m.group(1).split(".")[-1], text)
    return text.replace("``", "")


def field_docs(cls: type) -> dict[str, FieldDoc]:
    """Help (and choices) of every documented field of config ``cls``."""
    docs = {**_comments(cls), **_numpydoc_params(cls.__doc__ or "")}
    return {k: dataclasses.replace(v, help=_plain(v.help)) for k, v in docs.items()}


def _scalar_type(hint: Any) -> type | None:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if hint in (int, float, str, bool):
        return hint
    if len(args) == 1 and args[0] in (int, float, str, bool):
        return args[0]
    # Any, or e.g. `str | dict` (a name or the object itself): a name on the command line.
    return str if hint is Any or str in args else None


def _flag(name: str, rename: Mapping[str, str], prefix: str) -> str:
    return "--" + rename.get(name, prefix + name.replace("_", "-"))


def add_config_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type, *,
                       fields: Iterable[str] | None = None, rename: Mapping[str, str] | None = None,
                       prefix: str = "", keep_defaults: str | None = None,
                       help: Mapping[str, str] | None = None) -> None:
    """Add one option per field of config ``cls``.

    Parameters
    ----------
    parser : ArgumentParser or argument group
    cls : dataclass type
    fields : iterable of str, optional
        The fields to expose (default: every field with a scalar type).
    rename : mapping, optional
        Field name -> option name without ``--`` where the CLI keeps an older name.
    prefix : str
        Prefix of the option names (``"ray-"``).
    keep_defaults : str, optional
        Options default to None (keep the base config's value, e.g. a preset's); this
        text names that base in the help.
    help : mapping, optional
        Extra help for some fields, appended to the field doc.
    """
    rename, help = dict(rename or {}), dict(help or {})
    docs, hints = field_docs(cls), typing.get_type_hints(cls)
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    for name in fields if fields is not None else [f.name for f in dataclasses.fields(cls)]:
        kind = _scalar_type(hints[name])
        if kind is None:
            continue
        doc = docs.get(name, FieldDoc())
        text = " ".join(t for t in (doc.help, help.get(name, "")) if t)
        default = None if keep_defaults else defaults[name]
        if default is dataclasses.MISSING:
            default = None
        if keep_defaults:
            text += f" (default: {keep_defaults})"
        elif default is not None and default is not False:
            text += " (default: %(default)s)"
        kwargs: dict[str, Any] = {"dest": rename.get(name, prefix + name).replace("-", "_"), "default": default,
                                  "help": text.replace("%", "%%").replace("%%(default)s", "%(default)s")}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs.update(type=kind, choices=doc.choices, metavar=None if doc.choices else name.upper())
        parser.add_argument(_flag(name, rename, prefix), **kwargs)


def config_values(args: argparse.Namespace, cls: type, *, fields: Iterable[str] | None = None,
                  rename: Mapping[str, str] | None = None, prefix: str = "",
                  drop_none: bool = False) -> dict[str, Any]:
    """The values of the options :func:`add_config_options` made, by field name."""
    rename = dict(rename or {})
    names = fields if fields is not None else [f.name for f in dataclasses.fields(cls)]
    values = {}
    for name in names:
        dest = rename.get(name, prefix + name).replace("-", "_")
        if hasattr(args, dest) and not (drop_none and getattr(args, dest) is None):
            values[name] = getattr(args, dest)
    return values


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Option values from a YAML or JSON file: ``{option name: value}``.

    Keys are option names with ``-`` or ``_`` (``batch-size`` or ``batch_size``).
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc})") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml  # YAML is a superset of JSON: any other suffix is read as YAML

            data = yaml.safe_load(text)
    except Exception as exc:  # the parsers' errors have no common base
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'} ({exc})") \
            from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to values, got {type(data).__name__}")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


@dataclasses.dataclass(frozen=True)
class DataOptions(Config):
    """What every command that reads data takes, defined once for all of them.

    Parameters
    ----------
    id_column : str
        Id column of catalog files and prediction tables.
    path_column : str
        Image path column of catalog files (relative paths: from the catalog's folder).
    tree : str
        Decision tree: "gz2" or a JSON file (see Tree.to_dict).
    device : str
        "auto", "cpu", "cuda", "cuda:1"...
    workers : int or None
        Decoding processes (None: automatic; 0: decode in the main process).
    """

    id_column: str = "GalaxyID"
    path_column: str = "path"
    tree: str = "gz2"
    device: str = "auto"
    workers: int | None = None

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"workers must be >= 0 or None, got {self.workers}")


def add_data_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup, fields: Iterable[str]) -> None:
    """The options of the :class:`DataOptions` ``fields`` a command uses (``--id-column``...)."""
    add_config_options(parser, DataOptions, fields=fields)


def data_options(args: argparse.Namespace) -> DataOptions:
    """The :class:`DataOptions` of a command's parsed arguments (defaults for the options it lacks)."""
    return build(DataOptions, config_values(args, DataOptions))

