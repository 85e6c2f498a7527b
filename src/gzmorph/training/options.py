"""How a training run is carried out (what is trained is :class:`~gzmorph.models.trainconfig.TrainConfig`)."""

from __future__ import annotations

from dataclasses import dataclass

from gzmorph.config import Config
from gzmorph.data.composite import Stretch

__all__ = ["RunOptions"]


@dataclass(frozen=True)
class RunOptions(Config):
    """Where and how :func:`gzmorph.training.train.train` runs; none of it changes the result.

    Parameters
    ----------
    device : str
        "auto", "cpu", "cuda", "cuda:1"...
    resume : bool
        Continue from checkpoints/last.pt (the stored config wins).
    workers : int or None
        Decoding processes (None: all cores).
    max_minutes : float or None
        Wall-time budget; the run stops cleanly (checkpoint written) when it is spent.
    progress : bool
        Show a progress bar.
    processes : int
        Data-parallel processes (DDP) started here, one per GPU on CUDA (gloo on the
        CPU).  Under torchrun leave it at 1: the group comes from the environment.
    id_column : str
        Id column of a CSV/Parquet catalog given as the data.
    path_column : str
        Image path column of a CSV/Parquet catalog given as the data.
    new_data : bool
        Let resume continue on data other than the run's (path or ids/labels differ;
        recorded in config.json as data_history); without it such a resume is refused.
    stretch : Stretch or None
        Colour composite of FITS cutouts in the data (:mod:`gzmorph.data.composite`);
        recorded in config.json so that prediction with the run uses it too.
    """

    device: str = "auto"
    resume: bool = False
    workers: int | None = None
    max_minutes: float | None = None
    progress: bool = True
    processes: int = 1
    id_column: str = "GalaxyID"
    path_column: str = "path"
    new_data: bool = False
    stretch: Stretch | None = None

    def __post_init__(self) -> None:
        if isinstance(self.stretch, dict):
            object.__setattr__(self, "stretch", Stretch.from_dict(self.stretch))
        if self.processes < 1:
            raise ValueError(f"processes must be >= 1, got {self.processes}")
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"workers must be >= 0 or None, got {self.workers}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"max_minutes must be positive or None, got {self.max_minutes}")
