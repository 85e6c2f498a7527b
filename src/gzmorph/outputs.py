"""The one output-path guard every writing command uses.

The rule: **no command writes into or deletes a path that is an input of the job, or
that gzmorph did not create, unless the user says so with an explicit flag.**

- :func:`refuse_overwrite` compares an output with every input: an output equal to an
  input, *inside* an input folder (a cache, a run, an image or Kaggle folder: every
  file of it is an input), or holding an input, is refused.  An output file that
  already exists is also compared, by inode, with every file of the input folders
  (hard links, symlinked files).
- Folders gzmorph creates carry a marker file (:data:`MARKER`, ``{"kind": ...}``) written
  by the same call that creates them: a dataset (``mock``), a cache (``prepare``), a run
  (``train``), a report (``evaluate``), an analysis (``analyze``), an index (``similar
  --build``).  :func:`claim_folder` accepts only a new or empty folder, or one marked
  with the expected kind; no common file name (``truth.csv``, ``config.json``) is taken
  as proof of ownership.
- :func:`claim_file` refuses an existing file unless the caller's flag allows it.
- :func:`temporary_path` gives a unique hidden temporary name, created by the same
  call, so a write never first deletes someone else's ``.X.tmp``; :func:`atomic_write`
  writes a file through one (re-exported by :mod:`gzmorph.runtime`).

This module imports nothing above :mod:`gzmorph.errors`, so every layer can use it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

from gzmorph.errors import OutputError

__all__ = ["MARKER", "refuse_overwrite", "mark_folder", "folder_kind", "claim_folder", "claim_file",
           "temporary_path", "temporary_folder", "atomic_write"]

#: Marker file of a folder gzmorph created (hidden: image-folder readers skip it).
MARKER = ".gzmorph.json"

# Walking a huge input folder to compare inodes would cost more than it protects; beyond
# this many files only the path comparisons are made.
_MAX_WALK = 200_000


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _real(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(path))


def _same(a: Path, b: Path) -> bool:
    # realpath catches symlinks and relative spellings, samefile hard links.
    if _real(a) == _real(b):
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` lies inside the folder ``folder`` (both resolved)."""
    return _real(folder) in _real(path).parents


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _walk_inodes(folder: Path, wanted: set[tuple[int, int]]) -> Path | None:
    """The first file of ``folder`` (recursively, links followed) whose inode is in ``wanted``."""
    seen, visited = 0, set()
    for root, dirs, names in os.walk(folder, followlinks=True):
        visited.add(_inode(Path(root)))
        dirs[:] = [d for d in dirs if _inode(Path(root) / d) not in visited]  # no symlink cycles
        for name in names:
            seen += 1
            if seen > _MAX_WALK:
                return None
            if _inode(Path(root) / name) in wanted:
                return Path(root) / name
    return None


def refuse_overwrite(inputs: Iterable[Any], files: Iterable[str | os.PathLike] = (),
                     folders: Iterable[str | os.PathLike] = (), option: str = "--out") -> None:
    """Raise :class:`OutputError` when an output would replace, hold or sit inside an input.

    Called before any work, so a wrong ``--out`` loses nothing.

    Parameters
    ----------
    inputs : iterable
        Every input of the job (files and folders: catalogs, caches, runs, image
        folders, thresholds, weights...).  Objects other than paths (an opened catalog)
        are skipped.
    files : iterable of path
        The exact files the command writes (outputs and side files).
    folders : iterable of path
        Folders it creates, fills or clears.
    option : str
        The option named in the message.
    """
    given = [Path(i) for i in inputs if isinstance(i, (str, os.PathLike)) and str(i)]
    in_dirs = [inp for inp in given if inp.is_dir()]
    outs = [(Path(f), False) for f in files] + [(Path(f), True) for f in folders]
    for out, _ in outs:
        for inp in given:
            if _same(out, inp):
                raise OutputError(f"{option} {out}: would overwrite the input {inp}; choose another output")
    for out, is_folder in outs:
        for inp in given:
            if inp in in_dirs and _inside(out, inp):
                raise OutputError(f"{option} {out}: lies inside the input folder {inp}, whose files the job "
                                  "reads (writing there could replace them or add files the next job "
                                  "takes as input); choose another output")
            if is_folder and _inside(inp, out):
                raise OutputError(f"{option} {out}: is or holds the input {inp}, which writing there "
                                  "could replace or delete; choose another output")
    existing = {}
    for out, is_folder in outs:
        if not is_folder and out.is_file():
            existing[_inode(out)] = out
    if existing:
        for folder in in_dirs:
            hit = _walk_inodes(folder, set(existing))
            if hit is not None:
                out = existing[_inode(hit)]
                raise OutputError(f"{option} {out}: is the same file as {hit} of the input {folder} (a link); "
                                  "choose another output")


def mark_folder(folder: str | os.PathLike, kind: str, **facts: Any) -> Path:
    """Create ``folder`` (and parents) and write its marker: gzmorph made it, as a ``kind``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / MARKER
    text = json.dumps({"gzmorph": kind, **facts}, indent=2, default=str) + "\n"
    tmp = temporary_path(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def folder_kind(folder: str | os.PathLike) -> str | None:
    """The kind recorded by :func:`mark_folder` in ``folder``, or None (no or unreadable marker)."""
    try:
        kind = json.loads((Path(folder) / MARKER).read_text()).get("gzmorph")
    except (OSError, ValueError, AttributeError):
        return None
    return kind if isinstance(kind, str) else None


def claim_folder(folder: str | os.PathLike, kind: str, option: str = "--out", what: str | None = None) -> bool:
    """Check that a command may write the folder ``folder`` as a ``kind``; return whether it holds one.

    Accepted: a missing folder, an empty one, or one whose marker says ``kind``.  A
    file, or a non-empty folder without that marker (any other folder of the user:
    images, a Kaggle download, another kind of output) raises :class:`OutputError`.
    """
    folder = Path(folder)
    what = what or kind
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{option} {folder}: is a file; give a folder for the {what}")
    if not folder.exists() or not any(folder.iterdir()):
        return False
    found = folder_kind(folder)
    if found == kind:
        return True
    if found is not None:
        raise OutputError(f"{option} {folder}: holds a gzmorph {found}, not a {what}; choose a new or empty folder")
    raise OutputError(f"{option} {folder}: is not empty and was not written as a {what} by gzmorph (no {MARKER} "
                      "marker); choose a new or empty folder")


def claim_file(path: str | os.PathLike, option: str = "--out", overwrite: bool = False,
               flag: str = "--overwrite") -> None:
    """Refuse an output file that is a folder, or that exists while ``overwrite`` is off."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{option} {path}: is an existing directory; give a file name")
    if path.exists() and not overwrite:
        raise OutputError(f"{option} {path}: exists; choose another name, or pass {flag} to replace it")


def temporary_path(path: str | os.PathLike, folder: bool = False) -> Path:
    """A new, unique, hidden temporary beside ``path`` (``.NAME.XXXXXXXX.tmp``), created by this call.

    The file (or, with ``folder``, the directory) exists when this returns, so the name
    cannot be someone else's; the caller renames it over ``path`` or deletes it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if folder:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        tmp.chmod(0o777 & ~_UMASK)  # mkdtemp's 0700 would end up as the final folder's mode
        return tmp
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_UMASK)  # the mode a plain open() would give, not mkstemp's 0600
    os.close(fd)
    return Path(name)


def temporary_folder(path: str | os.PathLike) -> Path:
    """:func:`temporary_path` as a directory (a package written beside its final name)."""
    return temporary_path(path, folder=True)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` for a temporary file beside ``path``, then rename it over ``path``.

    A job killed mid-write leaves the previous file (or none), never half a file.  The
    temporary name is ``.<name>.<random>.tmp``, unique and created by this call
    (:func:`temporary_path`): never a file of someone else, and hidden,
    so readers of a folder of Parquet parts skip one left behind by a killed job.
    """
    path = Path(path)
    tmp = temporary_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
