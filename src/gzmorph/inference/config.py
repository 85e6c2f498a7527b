"""The configuration of a prediction job (both executors)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from gzmorph.config import Config
from gzmorph.data.composite import Stretch
from gzmorph.data.pixscale import parse_pixel_scale

PRECISIONS = ("auto", "fast", "fp32", "bf16")  # gzmorph.runtime.PRECISIONS, without importing torch here

__all__ = ["PredictConfig", "TTA_CHOICES", "DEFAULT_BATCH", "ADAPT_BN_MIN"]

#: Images per forward pass by device type when ``batch_size`` is None (BENCHMARKS.md, "CPU throughput").
DEFAULT_BATCH = {"cpu": 64, "cuda": 512}

TTA_CHOICES = ("none", "rot", "paper")
#: Fewest decodable target images ``adapt_bn`` estimates BatchNorm statistics on (fewer give noise).
ADAPT_BN_MIN = 32


@dataclass(frozen=True)
class PredictConfig(Config):
    """How a prediction job runs.

    Parameters
    ----------
    tta : {"none", "rot", "paper"}
        Test-time averaging: one pass, rotations over one symmetry period of each model
        (5 for the paper's network, 10 for p4m), or the paper's 60 transforms (reduced
        by the symmetry of an exactly invariant model); :mod:`gzmorph.nn.tta`.
    batch_size : int or None
        Images per forward pass.  ``None``: chosen for the device the job runs on
        (:data:`DEFAULT_BATCH`: 64 on a CPU, where larger batches leave the caches and were
        slower, 512 on CUDA; :meth:`for_device`).
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
    precision : {"auto", "fast", "fp32", "bf16"}
        ``"auto"``: each run's recorded rule (its preset's ``predict_precision``):
        ``p4m`` in bf16 on CUDA and on CPUs with AVX512-BF16/AMX (measured as accurate
        as fp32), the ``paper`` presets in fp32 everywhere, the others in bf16 on CUDA
        only; ``"fast"``: bf16 wherever the hardware computes it natively, for every
        run; ``"fp32"``: fp32 everywhere; ``"bf16"``: bf16 everywhere
        (:mod:`gzmorph.inference.precision`).  bf16 probabilities differ from fp32 by
        up to about 1e-2.
    workers : int or None
        Decoding processes (``None``: automatic, ``0``: decode in this process); on Ray,
        per actor.
    compile : bool
        ``torch.compile`` the networks: ~10 s per run up front, then about twice the
        forward rate of the paper network on a CPU (BENCHMARKS.md); for large jobs.
    threads : int or None
        torch intra-op threads while the job runs.  ``None``: when images are decoded
        in this process (``workers=0``, the default on a CPU of at most 4 cores), the
        cores less one, which the decoding thread uses beside the network
        (:func:`gzmorph.inference.job.prediction_threads`); else torch's setting.
    chunk_rows : int
        Rows per written chunk (Parquet row group); rounded up to a multiple of
        ``batch_size``.  Bounds the memory used by predictions and the work lost
        when a job is killed.
    which : {"best", "last"}
        Checkpoint of each run.
    progress : bool
        Show a progress bar (images/s and time left).
    split : {"train", "test"}
        When the source is a Kaggle directory: its training or test images.
    id_column : str
        Id column of a catalog file given as the source.
    path_column : str
        Image path column of a catalog file given as the source.
    recentre : bool or None
        Recentre and rescale every image on its galaxy (:mod:`gzmorph.data.recentre`);
        ``None`` (default): as each run was trained (``augment.recentre``), so a run
        trained with recentring applies it without being asked.  Adds the
        ``recentred`` column (False where no galaxy was found and the plain centre
        crop was used).
    stretch : Stretch or None
        Colour composite of FITS cutouts (:mod:`gzmorph.data.composite`); ``None``: the
        one the run was trained with, if it was trained on FITS.
    calibration : {"auto", "on", "off"}
        Apply the model's ``calibration.json`` (``gzmorph calibrate``): ``auto`` when it
        has one, ``on`` refuse a model without one, ``off`` the raw network.
    interval_level : float or None
        Central level of the calibrated intervals (``Class1.1_lo``/``_hi``); ``None``: the
        calibration's (0.8 unless fitted otherwise).
    pixel_scale : float, str or None
        Show each galaxy at the angular size the model was trained at
        (:mod:`gzmorph.data.pixscale`): arcsec per pixel of the image files at their
        native size, a survey (sdss, legacy, decals, hsc, euclid, lsst), ``header``
        (each FITS file's PIXSCALE or WCS), or ``column:NAME`` (each row's own value in
        column NAME of the input catalogue, e.g. ``column:cutout_pixscale`` for a
        catalogue written by ``gzmorph cutouts``; a row without a usable value is an
        error row); the zoom (image field over the run's recorded field) goes into the
        one crop warp.  ``None``: off (the crop is a fixed fraction of each image).
    adapt_bn : bool
        Test-time adaptation (:mod:`gzmorph.inference.adapt`): before predicting,
        re-estimate the runs' BatchNorm statistics on a sample of the target images
        (networks with BatchNorm layers only, such as the p4m and cyclic presets; at
        least 32 decodable images); kept in ``<out>.adapt_bn.pt`` for ``--resume`` and
        recorded in the manifest.
    adapt_bn_images : int
        Most target images the statistics are estimated on, spread evenly over the
        collection (at least 32).
    """

    tta: str = "none"
    batch_size: int | None = None
    device: str = "auto"
    precision: str = "auto"
    workers: int | None = None
    threads: int | None = None
    compile: bool = False
    chunk_rows: int = 2048
    which: str = "best"
    progress: bool = True
    split: str = "train"
    id_column: str = "GalaxyID"
    path_column: str = "path"
    recentre: bool | None = None
    stretch: Stretch | None = None
    calibration: str = "auto"
    interval_level: float | None = None
    pixel_scale: float | str | None = None
    adapt_bn: bool = False
    adapt_bn_images: int = 1024

    def __post_init__(self) -> None:
        if self.adapt_bn_images < ADAPT_BN_MIN:
            raise ValueError(f"adapt_bn_images must be >= {ADAPT_BN_MIN}, got {self.adapt_bn_images}")
        object.__setattr__(self, "pixel_scale", parse_pixel_scale(self.pixel_scale))
        if isinstance(self.stretch, dict):
            object.__setattr__(self, "stretch", Stretch.from_dict(self.stretch))
        if self.tta not in TTA_CHOICES:
            raise ValueError(f"tta must be one of {TTA_CHOICES}, not {self.tta!r}")
        if (self.batch_size is not None and self.batch_size < 1) or self.chunk_rows < 1:
            raise ValueError(f"batch_size and chunk_rows must be >= 1, got {self.batch_size}, {self.chunk_rows}")
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"workers must be >= 0 or None, got {self.workers}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {self.threads}")
        if self.which not in ("best", "last"):
            raise ValueError(f"which must be 'best' or 'last', not {self.which!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {self.precision!r}")
        if self.split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', not {self.split!r}")
        if self.calibration not in ("auto", "on", "off"):
            raise ValueError(f"calibration must be 'auto', 'on' or 'off', not {self.calibration!r}")
        if self.interval_level is not None and not 0 < self.interval_level < 1:
            raise ValueError(f"interval_level must be in (0, 1), got {self.interval_level}")
        if self.batch_size is not None:  # else decided with the device (for_device), and rounded then
            # Chunks hold whole batches, so resumed and uninterrupted jobs batch alike.
            rows = -(-self.chunk_rows // self.batch_size) * self.batch_size
            object.__setattr__(self, "chunk_rows", rows)

    def for_device(self, device_type: str) -> "PredictConfig":
        """This config with ``batch_size`` decided for ``device_type`` ("cpu", "cuda", ...) when it is None."""
        if self.batch_size is not None:
            return self
        return replace(self, batch_size=DEFAULT_BATCH.get(device_type, DEFAULT_BATCH["cpu"]))
