"""Catalogs: which images, with which ids and (possibly partial) labels.

Three sources are read by :func:`open_catalog`:

* the Kaggle layout, a directory with ``images_training_rev1/``, ``images_test_rev1/``
  and ``training_solutions_rev1.csv`` (split ``"train"`` = the label rows and their
  images; ``"test"`` = the test images, unlabelled);
* a catalog file (CSV or Parquet) with an id column, an image path column (relative
  paths are resolved against the catalog's folder) and any subset of the tree's answer
  columns; other columns are ignored;
* a folder written by ``gzmorph cutouts`` (its ``catalog.parquet``, id column from its
  ``cutouts.json`` unless the given one is in the table);
* a plain directory of images (``.jpg``, ``.jpeg``, ``.png``, ``.tif``, FITS cutouts; not recursive), ids =
  file stems, no labels.  (Caches are opened by :mod:`gzmorph.data.source`.)

Labels are ``float32 (N, tree.n_answers)`` in tree order with ``NaN`` wherever the source
lacks a column or a value: missing answers are masked downstream, never read as zero.
Bad input raises :class:`CatalogError` naming the file and the line (CSV, counting the
header as line 1) or row (Parquet, from 0); broken tree sums only warn
(:class:`LabelWarning`) with the report of :func:`gzmorph.tree.check_labels`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gzmorph.errors import ConfigError
from gzmorph.data.fits import FITS_SUFFIXES
from gzmorph.data.votes import read_votes
from gzmorph.data.tables import (MAX_LISTED, CatalogError, LabelWarning, listing, parse_ids_text, read_catalog_table,
                                 read_catalog_with_column, show_id, user_stacklevel)
from gzmorph.tree import GZ2, Tree

__all__ = ["Catalog", "CatalogError", "LabelWarning", "open_catalog", "train_val_split",
           "IMAGE_SUFFIXES", "KAGGLE_LABELS", "KAGGLE_TRAIN_DIR", "KAGGLE_TEST_DIR"]

KAGGLE_LABELS = "training_solutions_rev1.csv"
KAGGLE_TRAIN_DIR = "images_training_rev1"
KAGGLE_TEST_DIR = "images_test_rev1"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", *FITS_SUFFIXES)
# A folder written by `gzmorph cutouts` (gzmorph.cutouts.folder; data cannot import it).
CUTOUTS_MANIFEST, CUTOUTS_CATALOG = "cutouts.json", "catalog.parquet"


def _image_stem(name: str) -> str | None:
    """The id of an image file name (its name without the image suffix), or None."""
    lower = name.lower()
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):  # ".fits.gz" before ".gz"-less ".fits"
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


@dataclass
class Catalog:
    """Images with ids and NaN-masked labels, in a fixed row order.

    Parameters
    ----------
    ids : ndarray, shape (N,)
        ``int64`` when every id is an integer, else ``object`` strings.
    paths : ndarray, shape (N,), object
        Absolute image paths (str), or ``None`` where pixels come from elsewhere (a
        cache, or a labels-only table).
    labels : ndarray, shape (N, tree.n_answers), float32
        Tree column order; ``NaN`` = not available.
    tree : Tree
    id_column : str
        Name of the id column in output files.
    source : str
        Where the catalog came from (for messages and provenance).
    votes : ndarray, shape (N, tree.n_answers), float32, optional
        Vote counts per answer (:mod:`gzmorph.data.votes`); None when the catalog has none.
    pixel_scales : ndarray, shape (N,), optional
        Each row's arcsec/px as read from the catalogue column of ``--pixel-scale
        column:NAME`` (:mod:`gzmorph.data.pixscale`): ``float64``, or ``object`` where the
        column held text, kept raw so that a bad value's error row can name it; None
        when no such column was asked for.
    """

    ids: np.ndarray
    paths: np.ndarray
    labels: np.ndarray
    tree: Tree = GZ2
    id_column: str = "GalaxyID"
    source: str = ""
    votes: np.ndarray | None = None
    pixel_scales: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.ids = np.asarray(self.ids)
        if self.ids.dtype.kind not in "iu":
            self.ids = self.ids.astype(object)
        self.paths = np.asarray(self.paths, dtype=object)
        self.labels = np.asarray(self.labels, dtype=np.float32)
        n = len(self.ids)
        if self.ids.ndim != 1 or self.paths.shape != (n,):
            raise ValueError(f"ids and paths must be 1-D of equal length, got {self.ids.shape} and {self.paths.shape}")
        if self.labels.shape != (n, self.tree.n_answers):
            raise ValueError(
                f"labels must have shape ({n}, {self.tree.n_answers}) for tree {self.tree.name!r}, "
                f"got {self.labels.shape}"
            )
        if self.pixel_scales is not None:
            self.pixel_scales = np.asarray(self.pixel_scales)
            if self.pixel_scales.shape != (n,):
                raise ValueError(f"pixel_scales must have shape ({n},), got {self.pixel_scales.shape}")

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: np.ndarray) -> "Catalog":
        """The rows ``index`` (integer positions or a boolean mask), in that order."""
        index = np.asarray(index)
        return Catalog(self.ids[index], self.paths[index], self.labels[index], self.tree, self.id_column, self.source,
                       None if self.votes is None else self.votes[index],
                       None if self.pixel_scales is None else self.pixel_scales[index])

    @property
    def column_mask(self) -> np.ndarray:
        """``(n_answers,)`` bool: answer columns with at least one value."""
        return ~np.isnan(self.labels).all(axis=0) if len(self) else np.zeros(self.tree.n_answers, dtype=bool)

    @property
    def label_columns(self) -> list[str]:
        """The tree's answer columns that this catalog has values for, in tree order."""
        return [c for c, ok in zip(self.tree.columns, self.column_mask) if ok]

    @property
    def has_labels(self) -> bool:
        return bool(self.column_mask.any())

    def require_labels(self) -> None:
        """Raise :class:`CatalogError` unless every row has at least one answer value."""
        if not self.has_labels:
            raise CatalogError(f"{self.source}: no labels (none of the answer columns of tree "
                               f"{self.tree.name!r} has a value), but labels are required")
        unlabelled = np.flatnonzero(np.isnan(self.labels).all(axis=1))
        if len(unlabelled):
            raise CatalogError(f"{len(unlabelled)} image(s) without any label, but labels are required: "
                               + listing(Path(self.source), unlabelled, lambda r: f"id {show_id(self.ids[r])}"))

    def to_frame(self, with_paths: bool = True) -> pd.DataFrame:
        """Id column, ``path`` (optional) and the available answer columns as a DataFrame."""
        frame = pd.DataFrame({self.id_column: self.ids})
        if with_paths:
            frame["path"] = self.paths
        mask = self.column_mask
        cols = pd.DataFrame(self.labels[:, mask], columns=self.label_columns)
        return pd.concat([frame, cols], axis=1)


def _scan_images(folder: Path) -> dict[str, Path]:
    """Map file stem -> path for the image-named entries directly in ``folder``.

    Every entry with an image suffix is an input, whatever its type: a broken
    symlink, a FIFO or a folder becomes an error row when it is decoded
    (:func:`gzmorph.data.decode.decode` says why), never a silent omission.
    """
    found: dict[str, Path] = {}
    ignored: list[str] = []
    base = folder.resolve()  # once, not per file: Kaggle folders hold ~60k images
    for entry in sorted(folder.iterdir()):
        stem = _image_stem(entry.name)
        if stem is None and not entry.name.startswith(".") and not entry.is_dir():
            ignored.append(entry.name)
        if stem is not None:
            if stem in found:
                raise CatalogError(f"{folder}: duplicate ids: {found[stem].name} and {entry.name} "
                                   f"share the id {stem!r}")
            found[stem] = base / entry.name
    if ignored:  # counted, never dropped silently
        warnings.warn(f"{folder}: {len(ignored)} files without an image suffix ({', '.join(IMAGE_SUFFIXES)}) "
                      f"ignored, e.g. {', '.join(ignored[:3])}", stacklevel=3)
    return found


def _open_folder(folder: Path, tree: Tree, id_column: str) -> Catalog:
    found = _scan_images(folder)
    if not found:
        raise CatalogError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in this directory")
    stems = list(found)
    ids = parse_ids_text(stems)
    order = np.argsort(ids, kind="stable")
    paths = np.asarray([str(found[stems[i]]) for i in order], dtype=object)
    labels = np.full((len(ids), tree.n_answers), np.nan, dtype=np.float32)
    return Catalog(ids[order], paths, labels, tree, id_column, str(folder))


def _open_kaggle_train(root: Path, tree: Tree, id_column: str, require_images: bool = True) -> Catalog:
    labels_file, image_dir = root / KAGGLE_LABELS, root / KAGGLE_TRAIN_DIR
    if not labels_file.is_file():
        raise CatalogError(f"{root}: Kaggle layout without {KAGGLE_LABELS} (needed for split 'train')")
    if not image_dir.is_dir():
        raise CatalogError(f"{root}: Kaggle layout without the image folder {KAGGLE_TRAIN_DIR}/")
    ids, paths, labels = read_catalog_table(labels_file, tree, id_column, path_column=None)
    catalog = Catalog(ids, paths, labels, tree, id_column, str(root), read_votes(labels_file, tree, labels, id_column))
    found = _scan_images(image_dir)
    keys = [str(i) for i in catalog.ids] if catalog.ids.dtype.kind in "iu" else list(catalog.ids)
    missing = np.flatnonzero([k not in found for k in keys])
    if not require_images:
        # The path the image would have: decoding it reports "file not found".
        found.update({keys[r]: image_dir / f"{keys[r]}.jpg" for r in missing})
    elif len(missing):
        raise CatalogError(f"{len(missing)} label row(s) without an image in {image_dir}: "
                           + listing(labels_file, missing, lambda r: f"no image for id {keys[r]}"))
    extra = sorted(set(found) - set(keys))
    if extra:
        warnings.warn(f"{image_dir}: {len(extra)} image(s) have no label row in {labels_file.name} and are "
                      f"left out of the training catalog (e.g. {', '.join(extra[:MAX_LISTED])}); "
                      f"open the folder itself to predict them", LabelWarning, stacklevel=user_stacklevel())
    catalog.paths = np.asarray([str(found[k]) for k in keys], dtype=object)
    return catalog


def _open_cutouts(folder: Path, tree: Tree, id_column: str, path_column: str, scale_column: str | None) -> Catalog:
    """The catalogue of a folder written by ``gzmorph cutouts`` (the fetched rows)."""
    import json

    table = folder / CUTOUTS_CATALOG
    if not table.is_file():
        raise CatalogError(f"{folder}: a cutouts job that has not finished (no {CUTOUTS_CATALOG}); "
                           "run `gzmorph cutouts ... --resume` first")
    import pyarrow.parquet as pq

    if id_column not in pq.read_schema(table).names:  # the folder's own id column (e.g. "objid")
        id_column = json.loads((folder / CUTOUTS_MANIFEST).read_text())["id_column"]
    return _read_file(table, tree, id_column, path_column, scale_column, votes=False)


def _read_file(path: Path, tree: Tree, id_column: str, path_column: str, scale_column: str | None,
               votes: bool = True) -> Catalog:
    """A catalogue file, with the values of ``scale_column`` (``--pixel-scale column:NAME``) when given."""
    if scale_column is None:
        ids, paths, labels = read_catalog_table(path, tree, id_column, path_column)
        scales = None
    else:
        ids, paths, labels, scales = read_catalog_with_column(path, tree, id_column, path_column, scale_column,
                                                              f"asked for by --pixel-scale column:{scale_column}")
    return Catalog(ids, paths, labels, tree, id_column, str(path),
                   read_votes(path, tree, labels, id_column) if votes else None, scales)


def _is_kaggle(folder: Path) -> bool:
    return any((folder / name).exists() for name in (KAGGLE_LABELS, KAGGLE_TRAIN_DIR, KAGGLE_TEST_DIR))


def open_catalog(
    spec: str | Path,
    *,
    tree: Tree = GZ2,
    split: str = "train",
    id_column: str = "GalaxyID",
    path_column: str = "path",
    require_labels: bool = False,
    require_images: bool = True,
    scale_column: str | None = None,
) -> Catalog:
    """Open a Kaggle directory, a CSV/Parquet catalog or an image folder.

    Parameters
    ----------
    spec : str or Path
        A Kaggle-layout directory, a ``.csv``/``.parquet`` catalog or a directory of
        images (a cache is opened by :func:`gzmorph.data.source.open_source`).
    tree : Tree
        Defines the answer columns read and the order of ``labels``.
    split : {"train", "test"}
        For the Kaggle layout only: the labelled training images or the unlabelled
        test images.
    id_column : str
        Id column of a catalog file (also the name used in output files).
    path_column : str
        Image path column of a catalog file; without it the paths are ``None`` (a
        labels-only table, e.g. for evaluation).
    require_labels : bool
        Raise unless every row has at least one answer value (for training).
    require_images : bool
        Kaggle layout: raise for label rows without an image file (training);
        ``False`` keeps them with the path their image would have (prediction
        reports them as error rows; evaluation reads labels only).
    scale_column : str or None
        Keep this column's values as :attr:`Catalog.pixel_scales` (``--pixel-scale
        column:NAME``); only a catalogue file or a cutouts folder has columns.

    Returns
    -------
    Catalog

    Raises
    ------
    CatalogError
        Missing files, a wrong header, duplicate ids, non-numeric or out-of-range
        values, label rows whose image is missing; the message names file and row.
    """
    if split not in ("train", "test"):
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
    path = Path(spec).expanduser()
    if not path.exists():
        raise CatalogError(f"{path}: no such file or directory")
    if path.is_file():
        catalog = _read_file(path, tree, id_column, path_column, scale_column)
    elif (path / "cache.json").is_file():  # gzmorph.data.cache.CACHE_META
        raise CatalogError(f"{path}: a cache written by `gzmorph prepare`; open it with "
                           "gzmorph.data.source.open_source")
    elif scale_column is not None and not (path / CUTOUTS_MANIFEST).is_file():
        raise CatalogError(f"{path}: a folder has no catalogue columns, so no column {scale_column!r} "
                           f"(--pixel-scale column:{scale_column}); give a CSV/Parquet catalogue holding it")
    elif (path / CUTOUTS_MANIFEST).is_file():
        catalog = _open_cutouts(path, tree, id_column, path_column, scale_column)
    elif _is_kaggle(path):
        if split == "train":
            catalog = _open_kaggle_train(path, tree, id_column, require_images)
        else:
            if not (path / KAGGLE_TEST_DIR).is_dir():
                raise CatalogError(f"{path}: Kaggle layout without the image folder {KAGGLE_TEST_DIR}/")
            catalog = _open_folder(path / KAGGLE_TEST_DIR, tree, id_column)
    else:
        catalog = _open_folder(path, tree, id_column)
    if require_labels:
        catalog.require_labels()
    return catalog


def train_val_split(catalog: Catalog, val_fraction: float = 0.1, seed: int | None = None) -> tuple[Catalog, Catalog]:
    """Split a catalog into training and validation parts, deterministically.

    Parameters
    ----------
    catalog : Catalog
    val_fraction : float
        Fraction held out, rounded to the nearest whole row (at least one row each).
    seed : int or None
        ``None``: sort by id and hold out the last rows (as the paper did); an int: a
        random subset drawn with ``numpy.random.default_rng(seed)``.

    Returns
    -------
    (train, val) : tuple of Catalog
        Both sorted by id.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n = len(catalog)
    if n < 2:
        raise ValueError(f"cannot split a catalog of {n} row(s) ({catalog.source})")
    n_val = min(max(int(round(n * val_fraction)), 1), n - 1)
    keys = catalog.ids if catalog.ids.dtype.kind in "iu" else catalog.ids.astype(str)
    order = np.argsort(keys, kind="stable")
    if seed is None:
        val = order[n - n_val:]
    else:
        chosen = np.zeros(n, dtype=bool)
        chosen[np.random.default_rng(seed).choice(n, size=n_val, replace=False)] = True
        val = order[chosen[order]]  # keep id order
    is_val = np.zeros(n, dtype=bool)
    is_val[val] = True
    train = order[~is_val[order]]
    return catalog.subset(train), catalog.subset(val)
