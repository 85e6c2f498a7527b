"""The data a run trains on: decoded images, split, colour PCA, recorded skips."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gzmorph.data.catalog import Catalog, train_val_split
from gzmorph.data.composite import Stretch, require_survey_extra
from gzmorph.data.decode import DecodeOptions
from gzmorph.data.pixscale import HEADER
from gzmorph.errors import CatalogError
from gzmorph.data.source import Source, open_source
from gzmorph.data.votes import pseudo_counts
from gzmorph.nn import augment as aug
from gzmorph.models.trainconfig import TrainConfig
from gzmorph.models.rundir import write_skipped
from gzmorph.training.header_scale import describe, read_header_scale
from gzmorph.tree import Tree

__all__ = ["TrainingData", "load_training_data", "data_fingerprint", "training_counts"]


@dataclass
class TrainingData:
    """Decoded training and validation images (uint8 ``(N, S, S, 3)``) with their labels."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    pca: dict[str, Any]
    label_columns: list[str]
    n_unlabelled: int = 0  # training rows without any label value, dropped
    fingerprint: str = ""  # of the source's ids and labels (data_fingerprint)
    train_geometry: torch.Tensor | None = None  # (N, 4) recentring geometry (augment.recentre), on the CPU
    val_geometry: torch.Tensor | None = None
    n_not_recentred: int = 0  # decoded rows where no galaxy was found (plain centre crop)
    train_votes: torch.Tensor | None = None  # (N, n_answers) counts for the dirichlet-multinomial loss, NaN masked
    header_scale: dict[str, Any] | None = None  # with pixel scales from FITS headers: HeaderScale.summary


def training_counts(catalog: Catalog, cfg: TrainConfig) -> np.ndarray | None:
    """Vote counts the count loss trains on (None for the fraction loss).

    The catalog's counts where it has them; elsewhere (questions without counts, or a
    catalog of fractions only) fractions times ``cfg.assumed_votes`` when given, else
    NaN (masked). A catalog without any count needs ``assumed_votes``: the conversion
    is never silent.
    """
    if cfg.loss != "dirichlet-multinomial":
        return None
    if catalog.votes is None and cfg.assumed_votes is None:
        raise CatalogError(f"{catalog.source}: loss 'dirichlet-multinomial' needs vote counts (Class1.1_votes or "
                           "Q1_votes columns); this catalog has fractions only: give --assumed-votes N to "
                           "train on fractions x N pseudo-votes, or use --loss mse")
    counts = np.full(catalog.labels.shape, np.nan, dtype=np.float32) if catalog.votes is None else catalog.votes
    if cfg.assumed_votes is not None:
        no_count = np.isnan(counts)
        counts = np.where(no_count, pseudo_counts(catalog.labels, cfg.assumed_votes), counts).astype(np.float32)
    return counts


def data_fingerprint(catalog: Catalog) -> str:
    """SHA-1 of a catalog's ids and labels: recognises the same training data on resume."""
    digest = hashlib.sha1(ids_text(catalog.ids).encode())
    digest.update(np.ascontiguousarray(catalog.labels, dtype=np.float32).tobytes())
    return digest.hexdigest()


def ids_text(ids: np.ndarray) -> str:
    return "\n".join(map(str, ids.tolist()))


def _record_skips(source: Source, failed: list[tuple[int, str]], out: Path) -> None:
    cat = source.catalog
    path = write_skipped(out, cat.id_column, [(cat.ids[row], cat.paths[row] or "", reason) for row, reason in failed])
    print(f"skipped {len(failed)} undecodable images (listed in {path})")


def _check_validation(val: Catalog, catalog: Catalog, cfg: TrainConfig) -> None:
    """Refuse a validation split without labels: its RMSE would read 0 and pick best.pt."""
    if np.isnan(val.labels).all():
        how = "the last rows by id" if cfg.split_seed is None else f"drawn with split seed {cfg.split_seed}"
        raise CatalogError(
            f"{catalog.source}: the validation split ({len(val)} rows, {how}, val_fraction {cfg.val_fraction}) "
            f"has no labelled entries in the labelled columns {', '.join(catalog.label_columns)}; "
            "label those rows, remove unlabelled rows, or choose another --split-seed")


def load_training_data(data: Any, cfg: TrainConfig, tree: Tree, out: Path, workers: int | None = None,
                       progress: bool = True, id_column: str = "GalaxyID", path_column: str = "path",
                       stretch: Stretch | None = None, header_field: float | None = None) -> TrainingData:
    """Decode a labelled source, drop (and record) undecodable rows, split it, compute the PCA.

    ``data`` is anything :func:`gzmorph.data.source.open_source` opens; ``stretch``
    makes FITS cutouts colour composites.  With ``cfg.augment.recentre`` every image's
    geometry is measured (or read from a cache prepared with it).  With
    ``cfg.pixel_scale == "header"`` (or ``header_field``, a resumed run's field) every
    FITS cutout is shown at the one field of the run (:mod:`gzmorph.training.header_scale`):
    its geometry carries the zoom, composed with the recentring when both are on.
    """
    if stretch is not None or cfg.augment.recentre:
        require_survey_extra()
    source = open_source(data, tree=tree, id_column=id_column, path_column=path_column,
                         options=DecodeOptions(stretch) if stretch is not None else None)
    if not source.catalog.has_labels:
        source.catalog.require_labels()  # raises: no answer column of the tree has a value
    scale = None
    if cfg.pixel_scale == HEADER or header_field is not None:
        scale = read_header_scale(source, stretch, header_field, progress)  # before any decoding
        source.options = replace(source.options, pixel_scale=HEADER, model_field=scale.field)
    images, failed, geometry = source.load(cfg.image_size, workers=workers, progress=progress,
                                           recentre=cfg.augment.recentre)
    out.mkdir(parents=True, exist_ok=True)
    keep = np.ones(len(source), dtype=bool)
    if failed:
        _record_skips(source, failed, out)
        keep[[row for row, _ in failed]] = False
    rows = np.flatnonzero(keep)
    summary = None if scale is None else scale.summary(rows)
    if summary is not None:
        print(describe(summary))
    catalog = source.catalog.subset(rows)
    images = images[rows]
    geometry = None if geometry is None else torch.from_numpy(np.ascontiguousarray(geometry[rows]))
    train_cat, val_cat = train_val_split(catalog, cfg.val_fraction, cfg.split_seed)
    _check_validation(val_cat, catalog, cfg)
    # Rows without any label teach nothing (every loss term is masked): drop and count them.
    unlabelled = np.isnan(train_cat.labels).all(axis=1)
    if unlabelled.all():
        raise CatalogError(f"{catalog.source}: none of the {len(train_cat)} rows of the training split has a label")
    if unlabelled.any():
        print(f"dropped {int(unlabelled.sum())} training row(s) without any label (recorded in config.json)")
        train_cat = train_cat.subset(~unlabelled)
    pos = {k: i for i, k in enumerate(catalog.ids.tolist())}
    tr = np.array([pos[k] for k in train_cat.ids.tolist()], dtype=np.int64)
    va = np.array([pos[k] for k in val_cat.ids.tolist()], dtype=np.int64)
    train_images = torch.from_numpy(np.ascontiguousarray(images[tr]))
    return TrainingData(
        train_images=train_images,
        train_labels=torch.from_numpy(train_cat.labels),
        train_votes=(None if (counts := training_counts(train_cat, cfg)) is None else torch.from_numpy(counts)),
        val_images=torch.from_numpy(np.ascontiguousarray(images[va])),
        val_labels=torch.from_numpy(val_cat.labels),
        pca=aug.color_pca(train_images.numpy(), seed=cfg.seed),
        label_columns=list(catalog.label_columns),
        n_unlabelled=int(unlabelled.sum()),
        fingerprint=data_fingerprint(source.catalog),
        train_geometry=None if geometry is None else geometry[tr],
        val_geometry=None if geometry is None else geometry[va],
        n_not_recentred=0 if geometry is None or not cfg.augment.recentre else int((geometry[:, 3] == 0).sum()),
        header_scale=summary,
    )
