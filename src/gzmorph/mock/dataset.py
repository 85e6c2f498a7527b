"""Write a mock Galaxy Zoo dataset in the Kaggle "Galaxy Challenge" layout.

::

    out/
      images_training_rev1/<GalaxyID>.jpg   training images (GalaxyID = 100000 + index)
      images_test_rev1/<GalaxyID>.jpg       test images (GalaxyID = 900000 + index)
      training_solutions_rev1.csv           GalaxyID + the 37 Kaggle answer columns
      test_solutions_rev1.csv               the same for the test images (only with n_test > 0;
                                            Kaggle kept these secret, the mock can score them)
      truth.csv                             true parameters of every galaxy (both splits)
      mock.json                             how it was made (seed, counts, size); marks the folder
                                            as a mock dataset that a new run may replace

Every galaxy draws its parameters, image and crowd from its own random streams,
seeded by ``(seed, split, index, stream)``, so the files depend on the seed only:
not on the number of workers, nor on the order in which the work is done.
"""

from __future__ import annotations

import contextlib
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from gzmorph.errors import ConfigError
from gzmorph import __version__
from gzmorph.data.votes import VOTES
from gzmorph.mock.labels import crowd_labels, visibility
from gzmorph.mock.params import GalaxyParams, sample_params
from gzmorph.mock.render import render_galaxy
from gzmorph.outputs import claim_folder, mark_folder
from gzmorph.runtime import atomic_write, cpu_cores, torch_threads
from gzmorph.tree import GZ2

__all__ = ["generate", "galaxy_rng", "TRAIN_DIR", "TEST_DIR", "LABELS_FILE", "TEST_LABELS_FILE", "TRUTH_FILE",
           "TRAIN_ID_START", "TEST_ID_START"]

TRAIN_DIR = "images_training_rev1"
TEST_DIR = "images_test_rev1"
LABELS_FILE = "training_solutions_rev1.csv"
TEST_LABELS_FILE = "test_solutions_rev1.csv"
TRUTH_FILE = "truth.csv"
TRAIN_ID_START = 100_000
TEST_ID_START = 900_000
_STREAMS = {"params": 0, "render": 1, "labels": 2}
_SPLITS = ("train", "test")
_JPEG_QUALITY = 90


def galaxy_rng(seed: int, split: str, index: int, stream: str) -> np.random.Generator:
    """The random stream ``stream`` (``"params"``, ``"render"`` or ``"labels"``) of one galaxy."""
    return np.random.default_rng(np.random.SeedSequence([seed, _SPLITS.index(split), index, _STREAMS[stream]]))


def _write_jpeg(img: np.ndarray, path: Path) -> None:
    # Write then rename: an interrupted run never leaves a truncated JPEG behind.
    atomic_write(path, lambda tmp: Image.fromarray(img).save(tmp, format="JPEG", quality=_JPEG_QUALITY))


def _make(task: tuple) -> GalaxyParams | tuple[GalaxyParams, dict]:
    """Worker: draw one galaxy, render it and write its JPEG (or FITS cube); return its parameters.

    A FITS task also returns the truth of the cutout (centre, size: :mod:`gzmorph.mock.fits`).
    """
    seed, split, index, gid, folder, size, survey, view = task
    params = sample_params(galaxy_rng(seed, split, index, "params"))
    rng = galaxy_rng(seed, split, index, "render")
    if view is not None:  # the same scene through another survey's eyes (gzmorph.mock.surveys)
        from gzmorph.mock.surveys import SURVEY_VIEWS, render_view

        _write_jpeg(render_view(params, rng, SURVEY_VIEWS[view], size), Path(folder) / f"{gid}.jpg")
        return params
    if survey is not None:
        from gzmorph.mock.fits import MOCK_SURVEYS, render_cutout, write_cube

        planes, truth = render_cutout(params, rng, size, MOCK_SURVEYS[survey])
        path = Path(folder) / f"{gid}.fits"
        atomic_write(path, lambda tmp: write_cube(planes, tmp, MOCK_SURVEYS[survey]))
        return params, truth
    _write_jpeg(render_galaxy(params, rng, size), Path(folder) / f"{gid}.jpg")
    return params


def _init_worker() -> None:
    import torch

    # One process per core; torch threads on top would only fight over the cores.
    torch.set_num_threads(1)


def _single_torch_thread() -> contextlib.AbstractContextManager:
    """Render in-process with the same single torch thread as a pool worker."""
    return torch_threads(1)


def _prepare_out(out: Path, keep: dict[str, set[str]], has_test: bool, meta: dict) -> None:
    """Create the folders; in a previous mock dataset, remove images this run does not write.

    Only a folder marked as a mock dataset by the shared output guard
    (:func:`gzmorph.outputs.claim_folder`: the marker is written first, before any image)
    is cleaned; a folder recognised by a common file name (a real Kaggle folder holding
    a ``truth.csv``) is refused, never touched.
    """
    if claim_folder(out, "dataset", what="mock dataset (gzmorph mock)"):
        for folder, names in keep.items():
            if (out / folder).is_dir():
                for f in (out / folder).iterdir():
                    # Stale images of a larger run, and temporaries of an interrupted one.
                    stale_tmp = f.name.startswith(".") and f.name.endswith(".tmp")
                    if (f.suffix in (".jpg", ".fits") and f.name not in names) or stale_tmp:
                        f.unlink()
        if not has_test:
            (out / TEST_LABELS_FILE).unlink(missing_ok=True)
    mark_folder(out, "dataset", **meta)
    for folder in keep:
        (out / folder).mkdir(parents=True, exist_ok=True)


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    atomic_write(path, lambda tmp: df.to_csv(tmp, index=False, float_format="%.6f"))


def _resolve_workers(workers: int | None, n_total: int, size: int) -> int:
    if workers is None:
        cores = cpu_cores()
        # A worker takes ~2 s to start (it imports torch); one image costs ~1.5 ms plus
        # ~11 ms per 424^2 pixels (benchmarks/mock_speed.py).  Below ~8 s of serial work
        # the pool does not pay for itself.
        serial_s = n_total * (1.5 + 11.0 * (size / 424) ** 2) / 1000
        workers = 1 if serial_s < 8.0 else cores
    if workers < 0:
        raise ConfigError(f"workers must be >= 0 (0 or 1: in this process), got {workers}")
    return max(workers, 1)  # 0 means in-process, as for image decoding


def _render_all(tasks: list[tuple], workers: int, progress: bool) -> list[GalaxyParams]:
    bar = dict(total=len(tasks), disable=not progress, desc="mock galaxies", unit="img", smoothing=0.1)
    if workers == 1:
        with _single_torch_thread():
            return [_make(t) for t in tqdm(tasks, **bar)]
    chunk = max(1, min(16, len(tasks) // (8 * workers)))
    ctx = multiprocessing.get_context("spawn")  # fork would copy the caller's torch/thread state
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker) as pool:
        return list(tqdm(pool.map(_make, tasks, chunksize=chunk), **bar))


def generate(out: str | Path, n: int, n_test: int = 0, seed: int = 0, workers: int | None = None,
             progress: bool = True, size: int = 424, format: str = "jpeg", survey: str = "legacy",
             view: str | None = None) -> Path:
    """Generate a mock Galaxy Zoo 2 dataset in the Kaggle layout.

    Parameters
    ----------
    out : str or Path
        Output folder: new, empty, or a previous mock dataset (which is replaced).
    n : int
        Number of training galaxies (labelled), GalaxyIDs ``100000 + index``.
    n_test : int
        Number of test galaxies, GalaxyIDs ``900000 + index``.
    seed : int
        Non-negative seed; the same seed gives byte-identical files.
    workers : int, optional
        Worker processes; default: one per available core, or none (in-process) when
        the job is small (under ~8 s of serial work).
    progress : bool
        Show a tqdm progress bar.
    size : int
        Image side in pixels (424 as Kaggle; smaller renders the same scene at lower
        resolution, e.g. 141 for fast tests); for FITS, the cutout side.
    format : {"jpeg", "fits"}
        GZ2-like JPEGs, or multi-band FITS cutouts of survey ``survey``
        (:mod:`gzmorph.mock.fits`: off-centre galaxies of known size; the truth adds
        ``x_true``, ``y_true``, ``r90_true`` in pixels and ``pixscale``).
    survey : {"legacy", "sdss", "hsc"}
        Bands, pixel scale, PSF, noise and units of FITS cutouts.
    view : str, optional
        JPEGs of the same galaxies (same seed, same ids and labels) as ``size``-pixel
        cutouts of another survey (:data:`gzmorph.mock.surveys.SURVEY_VIEWS`: its pixel
        scale, PSF, depth, bands and stretch); the folder marker records its ``pixscale``.

    Returns
    -------
    Path
        ``out``.
    """
    if n < 0 or n_test < 0 or n + n_test < 1:
        raise ConfigError(f"need n >= 0, n_test >= 0 and at least one galaxy, got n={n}, n_test={n_test}")
    if n > TEST_ID_START - TRAIN_ID_START:
        raise ConfigError(f"n={n} would make training GalaxyIDs collide with test ones (at most "
                         f"{TEST_ID_START - TRAIN_ID_START})")
    if seed < 0:
        raise ConfigError(f"seed must be non-negative, got {seed}")
    if size < 16:
        raise ConfigError(f"size must be at least 16 pixels, got {size}")
    if format not in ("jpeg", "fits"):
        raise ConfigError(f"format must be 'jpeg' or 'fits', got {format!r}")
    if format == "fits":
        from gzmorph.data.composite import require_survey_extra
        from gzmorph.mock.fits import MOCK_SURVEYS

        require_survey_extra()
        if survey not in MOCK_SURVEYS:
            raise ConfigError(f"unknown mock survey {survey!r}; choose one of {', '.join(MOCK_SURVEYS)}")
    if view is not None:
        from gzmorph.mock.surveys import SURVEY_VIEWS

        if format != "jpeg" or view not in SURVEY_VIEWS:
            raise ConfigError(f"view must be one of {', '.join(SURVEY_VIEWS)} with JPEG output, got {view!r} "
                              f"({format})")
        if size > SURVEY_VIEWS[view].canvas_side():
            raise ConfigError(f"a {view} cutout of {size} px is wider than the mock field "
                              f"({SURVEY_VIEWS[view].canvas_side()} px at {SURVEY_VIEWS[view].pixscale}\"/px)")
    suffix = ".fits" if format == "fits" else ".jpg"
    out = Path(out)
    splits = [("train", i, TRAIN_ID_START + i) for i in range(n)] + [("test", i, TEST_ID_START + i)
                                                                      for i in range(n_test)]
    folders = {"train": TRAIN_DIR, "test": TEST_DIR}
    keep = {TRAIN_DIR: {f"{TRAIN_ID_START + i}{suffix}" for i in range(n)},
            TEST_DIR: {f"{TEST_ID_START + i}{suffix}" for i in range(n_test)}}
    meta = {"generator": "gzmorph.mock", "version": __version__, "n": n, "n_test": n_test, "seed": seed,
            "size": size, "format": format, **({"survey": survey} if format == "fits" else {}),
            **({"view": view, "pixscale": SURVEY_VIEWS[view].pixscale} if view is not None else {})}
    _prepare_out(out, keep, n_test > 0, meta)
    tasks = [(seed, split, i, gid, str(out / folders[split]), size, survey if format == "fits" else None, view)
             for split, i, gid in splits]
    made = _render_all(tasks, _resolve_workers(workers, len(tasks), size), progress)
    if format == "fits":
        params, truths = [m[0] for m in made], [m[1] for m in made]
    else:
        params, truths = made, None
    _write_tables(out, seed, splits, params, truths)
    return out


def _write_tables(out: Path, seed: int, splits: list[tuple[str, int, int]], params: list[GalaxyParams],
                  cutouts: list[dict] | None = None) -> None:
    """Crowd-label every galaxy and write the label and truth CSVs (with the FITS truth, if any)."""
    labels, votes, truth = [], [], []
    for k, ((split, i, gid), p) in enumerate(zip(splits, params)):
        rng = galaxy_rng(seed, split, i, "labels")
        n_vol = int(rng.integers(40, 51))
        fractions, counts = crowd_labels(p, rng, n_vol, with_counts=True)
        labels.append(fractions)
        votes.append(counts)
        truth.append({"GalaxyID": gid, "split": split, **p.to_dict(), "visibility": visibility(p),
                      "n_volunteers": n_vol, **(cutouts[k] if cutouts is not None else {})})
    table = pd.DataFrame(np.asarray(labels, dtype=np.float64).reshape(-1, GZ2.n_answers), columns=GZ2.columns)
    table.insert(0, "GalaxyID", [gid for _, _, gid in splits])
    # The simulated volunteers' votes per answer (gzmorph.data.votes), for count losses.
    counts = pd.DataFrame(np.asarray(votes, dtype=np.int64).reshape(-1, GZ2.n_answers),
                          columns=[c + VOTES for c in GZ2.columns])
    table = pd.concat([table, counts], axis=1)
    is_train = np.array([s == "train" for s, _, _ in splits], dtype=bool)
    _write_csv(table[is_train], out / LABELS_FILE)
    if not is_train.all():
        _write_csv(table[~is_train], out / TEST_LABELS_FILE)
    _write_csv(pd.DataFrame(truth), out / TRUTH_FILE)
