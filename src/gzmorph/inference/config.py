"""The configuration of a prediction job (both executors)."""

from __future__ import annotations

from dataclasses import dataclass

from gzmorph.config import Config
from gzmorph.data.composite import Stretch

__all__ = ["PredictConfig", "TTA_CHOICES"]

TTA_CHOICES = ("none", "rot", "paper")


@dataclass(frozen=True)
class PredictConfig(Config):
    """How a prediction job runs.

    Parameters
    ----------
    tta : {"none", "rot", "paper"}
        Test-time averaging: one pass, rotations over one symmetry period of each model
        (5 for the paper's network, 10 for p4m), or the paper's 60 transforms (reduced
        by the symmetry of an exactly invariant model); :mod:`gzmorph.nn.tta`.
    batch_size : int
        Images per forward pass (each pass renders ``batch_size`` crop pairs).
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
    precision : {"auto", "fp32", "bf16"}
        ``"auto"``: bf16 autocast and channels_last on CUDA, fp32 on the CPU
        (:func:`gzmorph.runtime.resolve_device`); ``"fp32"``: fp32 everywhere;
        ``"bf16"``: bf16 autocast and channels_last on the CPU too (faster on CPUs with
        native bf16, e.g. AVX512-BF16/AMX, at the cost of probabilities that differ from
        fp32 by up to a few 1e-3).
    workers : int or None
        Decoding processes (``None``: automatic, ``0``: decode in this process); on Ray,
        per actor.
    compile : bool
        ``torch.compile`` the networks: ~10 s per run up front, then about twice the
        forward rate of the paper network on a CPU (BENCHMARKS.md); for large jobs.
    threads : int or None
        torch intra-op threads while the job runs (``None``: torch's setting).  On a
        CPU shared with other jobs, ``threads=1, workers=0`` can be several times
        faster than the defaults (see BENCHMARKS.md): spinning OpenMP threads and
        decoding processes then fight for the same cores.
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
    """

    tta: str = "none"
    batch_size: int = 64
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

    def __post_init__(self) -> None:
        if isinstance(self.stretch, dict):
            object.__setattr__(self, "stretch", Stretch.from_dict(self.stretch))
        if self.tta not in TTA_CHOICES:
            raise ValueError(f"tta must be one of {TTA_CHOICES}, not {self.tta!r}")
        if self.batch_size < 1 or self.chunk_rows < 1:
            raise ValueError(f"batch_size and chunk_rows must be >= 1, got {self.batch_size}, {self.chunk_rows}")
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"workers must be >= 0 or None, got {self.workers}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {self.threads}")
        if self.which not in ("best", "last"):
            raise ValueError(f"which must be 'best' or 'last', not {self.which!r}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', not {self.precision!r}")
        if self.split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', not {self.split!r}")
        if self.calibration not in ("auto", "on", "off"):
            raise ValueError(f"calibration must be 'auto', 'on' or 'off', not {self.calibration!r}")
        if self.interval_level is not None and not 0 < self.interval_level < 1:
            raise ValueError(f"interval_level must be in (0, 1), got {self.interval_level}")
        # Chunks hold whole batches, so resumed and uninterrupted jobs batch alike.
        rows = -(-self.chunk_rows // self.batch_size) * self.batch_size
        object.__setattr__(self, "chunk_rows", rows)
