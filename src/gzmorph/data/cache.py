"""A catalog decoded once into a memory-mapped uint8 array.

Decoding JPEGs every epoch costs more than the network on small machines; a cache
decodes each image once (:func:`prepare`, ``gzmorph prepare``) and training and
prediction then read pixels straight from the page cache.

Layout of a cache directory::

    cache.json       metadata: format version, size, row count, id column, tree,
                     source, counts, and ``complete`` (written atomically; written
                     last with ``complete: true``)
    images.npy       (N, size, size, 3) uint8, a NumPy .npy file opened with mmap
                     (``np.load(..., mmap_mode="r")`` works too); failed rows are zeros
    catalog.parquet  id column, original ``path``, the catalog's available answer columns
    progress.npy     (N,) int8 row state: 0 pending, 1 decoded, 2 failed
    errors.csv       id, path, reason of every image that failed
    geometry.npy     (N, 4) float32, only when prepared with recentring: each image's
                     galaxy offset, zoom and found flag (:mod:`gzmorph.data.recentre`)

``cache.json`` also records the decode options (``options``: the FITS composite and
whether images were measured), so a cache is never resumed with other ones.

:func:`prepare` is safe to interrupt: the pixel file is flushed before the progress
file is (atomically) rewritten, every ``flush_every`` images, so the progress file
never claims a row that is not on disk.  Rerunning it on the same catalog resumes:
decoded rows are kept, pending and failed rows are (re)decoded.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gzmorph.errors import ConfigError
from gzmorph.data.catalog import Catalog, CatalogError
from gzmorph.data.decode import DEFAULT_SIZE, DecodeOptions
from gzmorph.data.pool import iter_decoded
from gzmorph.outputs import claim_folder, mark_folder
from gzmorph.runtime import atomic_write, write_json
from gzmorph.tree import Tree

__all__ = ["prepare", "ImageCache", "is_cache", "CACHE_META"]

CACHE_META = "cache.json"
_IMAGES, _INDEX, _PROGRESS, _ERRORS = "images.npy", "catalog.parquet", "progress.npy", "errors.csv"
_GEOMETRY = "geometry.npy"
_FORMAT = 1
_PENDING, _OK, _FAILED = 0, 1, 2


@dataclass
class ImageCache:
    """A prepared cache: pixels, ids, labels and per-row decode status.

    Attributes
    ----------
    root : Path
    images : np.memmap, shape (N, size, size, 3), uint8
        Row ``i`` belongs to ``ids[i]``; rows that failed to decode are zeros.
    ids, paths : ndarray, shape (N,)
        Ids (int64 or object) and the original image paths.
    labels : ndarray, shape (N, tree.n_answers), float32
        NaN-masked labels recorded at prepare time.
    tree : Tree
    id_column : str
    size : int
    ok : ndarray, shape (N,), bool
        Rows decoded successfully.
    errors : list of (id, reason)
    source : str
        The catalog the cache was made from.
    geometry : ndarray, shape (N, 4), float32, or None
        Recentring geometry ``[dx, dy, zoom, found]`` per row, when prepared with it.
    options : dict
        The decode options it was prepared with (:meth:`DecodeOptions.to_dict`).
    """

    root: Path
    images: np.ndarray
    ids: np.ndarray
    paths: np.ndarray
    labels: np.ndarray
    tree: Tree
    id_column: str
    size: int
    ok: np.ndarray
    errors: list
    source: str
    geometry: np.ndarray | None = None
    options: dict | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def __reduce__(self) -> tuple:
        # Sent to another process (a Ray actor) as its path, reopened there: the pixels stay
        # memory-mapped instead of being copied, and the cache keeps its own tree.
        return (ImageCache.open, (str(Path(self.root).resolve()),))

    @property
    def ok_index(self) -> np.ndarray:
        """Positions of the decoded rows: ``cache.catalog().subset(cache.ok_index)``."""
        return np.flatnonzero(self.ok)

    def catalog(self) -> Catalog:
        """The cached catalog, row-aligned with :attr:`images` (paths are ``None``)."""
        paths = np.full(len(self), None, dtype=object)
        return Catalog(self.ids, paths, self.labels, self.tree, self.id_column, str(self.root))

    @classmethod
    def open(cls, path: str | Path) -> "ImageCache":
        """Open a complete cache read-only.

        Raises
        ------
        CatalogError
            ``path`` is not a cache, or :func:`prepare` has not finished it.
        """
        root = Path(path)
        meta = _read_meta(root)
        if meta is None:
            raise CatalogError(f"{root}: not a gzmorph cache (no {CACHE_META}); make one with `gzmorph prepare`")
        if not meta.get("complete"):
            raise CatalogError(f"{root}: incomplete cache (prepare was interrupted); rerun `gzmorph prepare` "
                               "with the same arguments to finish it")
        tree = Tree.from_dict(meta["tree"])
        index = pd.read_parquet(root / _INDEX)
        ids, paths, labels = _unpack_index(index, meta["id_column"], tree)
        images = np.load(root / _IMAGES, mmap_mode="r")
        expected = (len(ids), meta["size"], meta["size"], 3)
        if images.shape != expected or images.dtype != np.uint8:
            raise CatalogError(f"{root / _IMAGES}: shape {images.shape} {images.dtype}, expected {expected} uint8")
        state = np.load(root / _PROGRESS)
        errors = pd.read_csv(root / _ERRORS, dtype={"id": str}, keep_default_na=False)
        id_of = {str(i): i for i in ids}
        error_list = [(id_of.get(i, i), r) for i, r in zip(errors["id"], errors["reason"])]
        geometry = np.load(root / _GEOMETRY) if (root / _GEOMETRY).is_file() else None
        return cls(root, images, ids, paths, labels, tree, meta["id_column"], int(meta["size"]),
                   state == _OK, error_list, meta.get("source", ""), geometry, meta.get("options"))


def is_cache(path: str | Path) -> bool:
    """True when ``path`` is a directory written by :func:`prepare` (complete or not)."""
    return (Path(path) / CACHE_META).is_file()


def _read_meta(root: Path) -> dict | None:
    meta_path = root / CACHE_META
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise CatalogError(f"{meta_path}: unreadable cache metadata ({exc})") from None
    if meta.get("format") != _FORMAT:
        raise CatalogError(f"{meta_path}: cache format {meta.get('format')!r}, this gzmorph reads {_FORMAT}")
    return meta


def _pack_index(catalog: Catalog) -> pd.DataFrame:
    frame = catalog.to_frame(with_paths=True)
    frame["path"] = frame["path"].astype(object)
    return frame


def _unpack_index(index: pd.DataFrame, id_column: str, tree: Tree) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ids = index[id_column].to_numpy()
    ids = ids.astype(np.int64) if ids.dtype.kind in "iu" else ids.astype(object)
    paths = index["path"].to_numpy(dtype=object)
    labels = np.full((len(index), tree.n_answers), np.nan, dtype=np.float32)
    for j, col in enumerate(tree.columns):
        if col in index.columns:
            labels[:, j] = index[col].to_numpy(dtype=np.float32)
    return ids, paths, labels


def _atomic_npy(array: np.ndarray, path: Path) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a handle: np.save would append ".npy" to a path
            np.save(fh, array)

    atomic_write(path, write)


def _atomic_frame(frame: pd.DataFrame, path: Path) -> None:
    if path.suffix == ".parquet":
        atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))
    else:
        atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


def _same_catalog(root: Path, meta: dict, catalog: Catalog, size: int, options: DecodeOptions) -> bool:
    # Through from_dict, so options added since the cache was started take their defaults.
    if DecodeOptions.from_dict(meta.get("options") or {}) != options:
        return False
    if meta.get("size") != size or meta.get("n") != len(catalog) or meta.get("id_column") != catalog.id_column:
        return False
    index = pd.read_parquet(root / _INDEX, columns=[catalog.id_column, "path"])
    return bool(np.array_equal(index[catalog.id_column].astype(str).to_numpy(), catalog.ids.astype(str))
                and np.array_equal(index["path"].to_numpy(dtype=object), catalog.paths))


def _start(catalog: Catalog, root: Path, size: int, overwrite: bool, options: DecodeOptions
           ) -> tuple[np.memmap, np.ndarray, np.ndarray | None]:
    """Open an existing cache of the same catalog for resuming, or lay out a new one."""
    # The shared output guard: only a new/empty folder or one marked as a cache by an
    # earlier prepare is written; --overwrite replaces a cache, never a user's folder.
    ours = claim_folder(root, "cache", what="cache (gzmorph prepare)")
    meta = _read_meta(root) if ours else None
    if meta is not None and not _same_catalog(root, meta, catalog, size, options):
        if not overwrite:
            raise CatalogError(f"{root}: holds a cache of another catalog or size (or decode options) "
                               f"({meta.get('source')}, size {meta.get('size')}, options {meta.get('options')}); "
                               "choose another output or pass overwrite=True (--overwrite)")
        meta = None
    mark_folder(root, "cache")
    shape = (len(catalog), size, size, 3)
    geometry = None
    if meta is None:
        (root / CACHE_META).unlink(missing_ok=True)  # the layout below is not valid until rewritten
        (root / _GEOMETRY).unlink(missing_ok=True)
        images = np.lib.format.open_memmap(root / _IMAGES, mode="w+", dtype=np.uint8, shape=shape)
        state = np.zeros(len(catalog), dtype=np.int8)
        _atomic_npy(state, root / _PROGRESS)
    else:
        images = np.lib.format.open_memmap(root / _IMAGES, mode="r+")
        state = np.load(root / _PROGRESS)
        if options.recentre and (root / _GEOMETRY).is_file():
            geometry = np.load(root / _GEOMETRY)
    if options.recentre and geometry is None:
        from gzmorph.data.recentre import NO_GEOMETRY

        geometry = np.tile(NO_GEOMETRY, (len(catalog), 1))
        state[state == _OK] = _PENDING  # rows decoded without their geometry are measured again
    # Labels may have been corrected since the first attempt: record the current ones.
    _atomic_frame(_pack_index(catalog), root / _INDEX)
    _write_meta(root, catalog, size, options, complete=False)
    return images, state, geometry


def _write_meta(root: Path, catalog: Catalog, size: int, options: DecodeOptions, complete: bool,
                counts: dict | None = None) -> None:
    write_json({"format": _FORMAT, "complete": complete, "size": size, "n": len(catalog),
                "id_column": catalog.id_column, "source": catalog.source, "tree": catalog.tree.to_dict(),
                "options": options.to_dict(), **(counts or {})}, root / CACHE_META)


def _checkpoint(images: np.memmap, state: np.ndarray, errors: dict, catalog: Catalog, root: Path,
                geometry: np.ndarray | None = None) -> None:
    images.flush()  # pixels reach the file before the progress file says they are there
    if geometry is not None:  # and their geometry too
        _atomic_npy(geometry, root / _GEOMETRY)
    _atomic_npy(state, root / _PROGRESS)
    rows = sorted(errors)
    frame = pd.DataFrame({"id": catalog.ids[rows], "path": catalog.paths[rows], "reason": [errors[r] for r in rows]})
    _atomic_frame(frame, root / _ERRORS)


def prepare(
    catalog: Catalog,
    out: str | Path,
    size: int = DEFAULT_SIZE,
    workers: int | None = None,
    progress: bool = True,
    *,
    overwrite: bool = False,
    flush_every: int = 2048,
    options: DecodeOptions | None = None,
) -> ImageCache:
    """Decode a catalog's images once into a memory-mapped cache (resumable).

    Parameters
    ----------
    catalog : Catalog
        Needs image paths (rows without one are recorded as failures).
    out : str or Path
        Cache directory; rerunning on the same catalog and size resumes there.
    size : int
        Side of the cached images in pixels.
    workers : int or None
        Decoding processes (see :func:`gzmorph.data.pool.iter_decoded`).
    progress : bool
        Show a tqdm progress bar.
    overwrite : bool
        Replace a cache of a different catalog or size at ``out`` instead of refusing.
    flush_every : int
        Decoded images between progress checkpoints.
    options : DecodeOptions, optional
        FITS composite, and recentring: with ``options.recentre`` every image's
        geometry is measured once and kept in ``geometry.npy``.

    Returns
    -------
    ImageCache
        Failed images are zero rows, ``ok`` is False for them and ``errors.csv``
        lists them (id, path, reason).
    """
    if size < 1 or flush_every < 1:
        raise ConfigError(f"size and flush_every must be positive, got {size} and {flush_every}")
    if len(catalog) == 0 or all(p is None for p in catalog.paths):
        raise CatalogError(f"{catalog.source}: no image paths to decode (a labels-only table needs an image "
                           "path column, see path_column / --path-column; a cache needs no preparing)")
    from tqdm.auto import tqdm

    root = Path(out)
    options = options or DecodeOptions()
    images, state, geometry = _start(catalog, root, size, overwrite, options)
    todo = np.flatnonzero(state != _OK)
    errors: dict[int, str] = {}
    bar = tqdm(total=len(catalog), initial=len(catalog) - len(todo), disable=not progress, unit="img",
               desc="prepare", smoothing=0.1)
    last = time.monotonic()
    try:
        paths = catalog.paths[todo]
        stream = iter_decoded(paths, size=size, workers=workers, options=options)
        for k, (i, image, reason, geom) in enumerate(stream, 1):
            row = int(todo[i])
            if image is None:
                images[row] = 0
                state[row], errors[row] = _FAILED, str(reason)
            else:
                images[row] = image
                state[row] = _OK
                if geometry is not None and geom is not None:
                    geometry[row] = geom
            bar.update(1)
            if k % flush_every == 0 or time.monotonic() - last > 30:
                _checkpoint(images, state, errors, catalog, root, geometry)
                last = time.monotonic()
    finally:
        bar.close()
        _checkpoint(images, state, errors, catalog, root, geometry)
    del images  # close the writable map before the read-only one is opened
    counts = {"n_ok": int((state == _OK).sum()), "n_failed": int((state == _FAILED).sum())}
    if geometry is not None:
        counts["n_recentred"] = int(((state == _OK) & (geometry[:, 3] > 0)).sum())
    _write_meta(root, catalog, size, options, complete=True, counts=counts)
    return ImageCache.open(root)
