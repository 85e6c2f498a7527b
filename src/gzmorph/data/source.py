"""Where the pixels come from: the one place that knows files, folders, Kaggle and caches.

Every job (training, prediction on one machine or on Ray, analysis, evaluation's labels)
opens its input with :func:`open_source` and gets a :class:`Source`: the
:class:`~gzmorph.data.catalog.Catalog` (ids, image paths, NaN-masked labels) and the
pixels, either decoded from the image files or read from a memory-mapped
:class:`~gzmorph.data.cache.ImageCache`.  :meth:`Source.stream` yields rows one by one as
:class:`~gzmorph.data.decode.Item` (bounded memory, for prediction); :meth:`Source.load`
decodes a set of rows into one array (training, analysis).  Either way an undecodable
row is a recorded ``(row, reason)``, never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from gzmorph.data.cache import ImageCache, is_cache
from gzmorph.data.catalog import Catalog, open_catalog
from gzmorph.data.decode import DecodeOptions, Item
from gzmorph.data.pixscale import scale_column
from gzmorph.data.pool import iter_decoded, load_images
from gzmorph.errors import CatalogError
from gzmorph.tree import GZ2, Tree

__all__ = ["Source", "open_source", "decode_rows", "CACHE_FAILED", "Item"]

CACHE_FAILED = "failed when the cache was prepared"


def decode_rows(paths: Sequence[str | None], rows: np.ndarray, size: int, workers: int | None,
                options: DecodeOptions | None = None, scales: Sequence | None = None) -> Iterator[Item]:
    """Decode ``paths`` (the images of catalog ``rows``, at their per-row ``scales``) in order, one
    :class:`Item` per row."""
    for item in iter_decoded(paths, size=size, workers=workers, options=options, scales=scales):
        yield item._replace(row=int(rows[item.row]))


@dataclass
class Source:
    """Rows to read: the catalog, and pixels from image files or from a cache.

    Attributes
    ----------
    catalog : Catalog
        Ids, labels and image paths (for a cache, the paths the cache was made from:
        they name the images in error rows).
    cache : ImageCache or None
        Where the pixels come from when not from the files.
    options : DecodeOptions or None
        FITS composite and recentring of image files (a cache holds its own pixels
        and, when prepared with recentring, the geometry).
    """

    catalog: Catalog
    cache: ImageCache | None = None
    options: DecodeOptions | None = None

    def __len__(self) -> int:
        return len(self.catalog)

    @property
    def size(self) -> int | None:
        """Side of the images when fixed by the source (a cache), else None."""
        return None if self.cache is None else int(self.cache.size)

    @property
    def name(self) -> str:
        return self.catalog.source

    def _require_paths(self) -> None:
        if self.cache is None and all(p is None for p in self.catalog.paths):
            raise CatalogError(f"{self.name}: the catalog has no image paths (no image path column); "
                               "give the image path column with --path-column (path_column)")

    def _check_size(self, size: int | None) -> int:
        if self.cache is None:
            if size is None:
                raise ValueError("decoding image files needs a size")
            return size
        if size is not None and size != self.cache.size:
            raise CatalogError(f"cache {self.name} holds {self.cache.size}-px images but {size} px are needed; "
                               f"prepare it with --size {size}")
        return int(self.cache.size)

    def _cache_reasons(self) -> dict[str, str]:
        return {str(k): r for k, r in self.cache.errors} if self.cache is not None else {}

    def _options(self, recentre: bool) -> DecodeOptions:
        options = self.options or DecodeOptions()
        return options if recentre == options.recentre else replace(options, recentre=recentre)

    def _scales(self, rows: np.ndarray) -> np.ndarray | None:
        """The per-row pixel scales of ``rows`` when the options ask for a catalogue column's."""
        if self.options is None or scale_column(self.options.pixel_scale) is None:
            return None
        return self.catalog.pixel_scales[rows]

    def check_scales(self) -> None:
        """Refuse ``column:NAME`` when the catalog does not carry that column's values (before any decoding)."""
        column = None if self.options is None else scale_column(self.options.pixel_scale)
        if column is not None and self.cache is None and self.catalog.pixel_scales is None:
            raise CatalogError(f"{self.name}: no pixel scales of column {column!r} in this catalog "
                               f"(--pixel-scale column:{column}); open it from its CSV/Parquet file, or set "
                               "Catalog.pixel_scales")

    def stream(self, rows: np.ndarray | None = None, size: int | None = None, workers: int | None = None,
               recentre: bool = False) -> Iterator[Item]:
        """One :class:`Item` per row of ``rows`` (default all), in order.

        Files are decoded at ``size`` (by ``workers`` processes, bounded look-ahead); a
        cache is read at its own size.  With ``recentre`` every item carries its
        geometry: files are measured as they are decoded; a cache gives the geometry
        it was prepared with, or (prepared without) is measured on its pixels here.
        """
        rows = np.arange(len(self)) if rows is None else np.asarray(rows, dtype=np.int64)
        self._require_paths()
        size = self._check_size(size)  # a cache at another size is refused, as by load
        if self.cache is None:
            yield from decode_rows(self.catalog.paths[rows], rows, size, workers, self._options(recentre),
                                   self._scales(rows))
            return
        reasons = self._cache_reasons()
        for row in rows:
            if self.cache.ok[row]:
                image = np.asarray(self.cache.images[row])
                yield Item(int(row), image, None, self._cached_geometry(int(row), image) if recentre else None)
            else:
                yield Item(int(row), None, reasons.get(str(self.catalog.ids[row]), CACHE_FAILED))

    def _cached_geometry(self, row: int, image: np.ndarray) -> np.ndarray:
        if self.cache.geometry is not None:
            return np.asarray(self.cache.geometry[row], dtype=np.float32)
        from gzmorph.data.recentre import measure_rgb

        return measure_rgb(image).geometry()

    def load(self, size: int | None, rows: np.ndarray | None = None, workers: int | None = None,
             progress: bool = True, recentre: bool = False
             ) -> tuple[np.ndarray, list[tuple[int, str]], np.ndarray | None]:
        """Decode ``rows`` (default all) into one array.

        Returns
        -------
        images : ndarray, shape (len(rows), S, S, 3), uint8
            Zeros where a row failed.
        failed : list of (int, str)
            Positions in ``rows`` that failed, with the reason.
        geometry : ndarray, shape (len(rows), 4), or None
            With ``recentre``, or with files decoded at a pixel scale (``options.pixel_scale``).
        """
        rows = np.arange(len(self)) if rows is None else np.asarray(rows, dtype=np.int64)
        self._require_paths()
        size = self._check_size(size)
        if self.cache is None:
            return load_images(self.catalog.paths[rows], size=size, workers=workers, progress=progress,
                               options=self._options(recentre), scales=self._scales(rows))
        reasons = self._cache_reasons()
        failed = [(i, reasons.get(str(self.catalog.ids[r]), CACHE_FAILED))
                  for i, r in enumerate(rows) if not self.cache.ok[r]]
        images = np.asarray(self.cache.images[rows])
        geometry = None
        if recentre:
            from gzmorph.data.recentre import NO_GEOMETRY

            geometry = np.stack([self._cached_geometry(int(r), images[i]) if self.cache.ok[r] else NO_GEOMETRY
                                 for i, r in enumerate(rows)]) if len(rows) else np.zeros((0, 4), np.float32)
        return images, failed, geometry


def _from_cache(cache: ImageCache, tree: Tree) -> Source:
    if cache.tree.columns != tree.columns:
        raise CatalogError(f"{cache.root}: the cache holds labels of tree {cache.tree.name!r}, "
                           f"but tree {tree.name!r} is needed; prepare it with that tree")
    # The original image paths, for the error rows (the cache's catalog has none).
    catalog = cache.catalog()
    catalog.paths = np.asarray(cache.paths, dtype=object)
    return Source(catalog, cache)


def open_source(spec: str | Path | Catalog | ImageCache | Source, *, tree: Tree = GZ2, split: str = "train",
                id_column: str = "GalaxyID", path_column: str = "path",
                require_labels: bool = False, require_images: bool = True,
                options: DecodeOptions | None = None) -> Source:
    """Open anything gzmorph reads images from.

    Parameters
    ----------
    spec : path, Catalog, ImageCache or Source
        A Kaggle-layout directory, a CSV/Parquet catalog, a folder of images, or a
        cache written by ``gzmorph prepare`` (path or opened); a Catalog or Source
        is used as it is.
    tree : Tree
        The answer columns read; a cache must hold this tree's labels.
    split, id_column, path_column
        How to read a Kaggle directory or a catalog file
        (:func:`gzmorph.data.catalog.open_catalog`); a cache knows its own.
    require_labels : bool
        Every row must have at least one answer value (training).
    require_images : bool
        Kaggle layout: a label row without its image file is an error (training);
        ``False`` keeps the row with the path it would have, so prediction reports
        it as an error row and evaluation, which reads labels only, ignores it.
    options : DecodeOptions, optional
        FITS composite, recentring and pixel scale of image files; with
        ``pixel_scale="column:NAME"`` the catalog file's ``NAME`` column is kept as
        each row's scale.

    Raises
    ------
    CatalogError
        Bad input, naming the file and the row.
    """
    if isinstance(spec, Source):
        source = spec
    elif isinstance(spec, Catalog):
        source = Source(spec)
    elif isinstance(spec, ImageCache):
        source = _from_cache(spec, tree)
    elif is_cache(spec):
        source = _from_cache(ImageCache.open(spec), tree)
    else:
        column = None if options is None else scale_column(options.pixel_scale)
        source = Source(open_catalog(spec, tree=tree, split=split, id_column=id_column, path_column=path_column,
                                     require_labels=require_labels, require_images=require_images,
                                     scale_column=column), options=options)
        return source
    if require_labels:
        source.catalog.require_labels()
    if options is not None and source.cache is None:
        source.options = options
    source.check_scales()
    return source
