"""``gzmorph prepare``: decode a catalog once into a memory-mapped cache."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "decode a catalog's images once into a memory-mapped cache (resumable)"
DESCRIPTION = (
    "Decode every image of DATA (a Kaggle-layout directory, a CSV/Parquet catalog or a folder "
    "of images) at SIZE x SIZE pixels into CACHE, with the ids and labels, so that training and "
    "prediction read pixels instead of JPEGs. Interrupt it at any time; rerunning the same "
    "command resumes. Images that cannot be decoded are listed in CACHE/errors.csv."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from gzmorph.data.decode import DEFAULT_SIZE  # light import: keeps `gzmorph --help` fast
    from gzmorph.options import add_data_options

    parser.add_argument("data", metavar="DATA", help="Kaggle directory, catalog file or image folder")
    parser.add_argument("--out", metavar="CACHE", default=None,
                        help="cache directory (None: DATA_cache<SIZE> next to DATA, DATA_test_cache<SIZE> for --split test)")
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, help="side of the cached images in pixels")
    parser.add_argument("--split", choices=["train", "test"], default="train", help="Kaggle layout: which images")
    add_data_options(parser, ("workers", "id_column", "path_column", "tree"))
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a cache of a different catalog or size at CACHE")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--recentre", action="store_true",
                        help="measure every image's galaxy centre and size once (source extraction, the paper's "
                             "section 7.3) and keep them in the cache for train/predict with recentring")
    from gzmorph.commands.predict import add_survey_options

    add_survey_options(parser)


def default_out(data: str | Path, split: str, size: int) -> Path:
    """``DATA_cache141`` next to DATA (``DATA_test_cache141`` for the Kaggle test split)."""
    data = Path(data).expanduser().resolve()
    stem = data.stem if data.is_file() else data.name
    tag = "_test" if split == "test" else ""
    return data.parent / f"{stem}{tag}_cache{size}"


def run(args: argparse.Namespace) -> int:
    from gzmorph.commands.predict import survey_stretch
    from gzmorph.data.cache import prepare
    from gzmorph.data.catalog import open_catalog
    from gzmorph.data.composite import require_survey_extra
    from gzmorph.data.decode import DecodeOptions
    from gzmorph.options import data_options
    from gzmorph.runtime import refuse_overwrite
    from gzmorph.tree import get_tree

    data = data_options(args)
    out = Path(args.out) if args.out else default_out(args.data, args.split, args.size)
    # prepare clears a cache folder it replaces: it must not be (or hold) the data.
    refuse_overwrite([args.data], folders=[out])
    # Bad catalogs and settings raise; gzmorph.cli reports them in one line (exit 2).
    catalog = open_catalog(args.data, tree=get_tree(data.tree), split=args.split,
                           id_column=data.id_column, path_column=data.path_column)
    print(f"{len(catalog)} images from {catalog.source} -> {out} at {args.size}x{args.size} px")
    options = DecodeOptions(survey_stretch(args), args.recentre)
    if options.stretch is not None or options.recentre:
        require_survey_extra()
    cache = prepare(catalog, out, size=args.size, workers=data.workers,
                    progress=not args.no_progress, overwrite=args.overwrite, options=options)
    n_failed = len(cache) - int(cache.ok.sum())
    found = "" if cache.geometry is None else \
        f"; recentred {int((cache.ok & (cache.geometry[:, 3] > 0)).sum())} (no galaxy found in " \
        f"{int((cache.ok & (cache.geometry[:, 3] == 0)).sum())}: plain centre crop)"
    print(f"decoded {int(cache.ok.sum())}, failed {n_failed}"
          + (f" (listed in {out / 'errors.csv'})" if n_failed else "") + found + f"; cache: {out}")
    return 0 if cache.ok.any() else 1
