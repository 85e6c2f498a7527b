"""What a prediction job did: every input is either predicted or failed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from gzmorph.inference.parts import output_format, read_science
from gzmorph.inference.table import ERROR_COLUMNS

__all__ = ["PredictSummary", "RaySummary"]


@dataclass
class PredictSummary:
    """What a prediction job did: every input is either predicted or failed."""

    out: Path
    errors_file: Path
    n_inputs: int
    n_predicted: int
    n_failed: int
    n_resumed: int
    seconds: float
    id_column: str = "GalaxyID"
    integer_ids: bool = True
    n_not_recentred: int | None = None  # with recentring: predicted rows that kept the plain centre crop
    n_adapted: int | None = None  # with adapt_bn: target images the BatchNorm statistics were estimated on

    def read(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The output file and the error file as DataFrames (string ids stay strings)."""
        dtype = None if self.integer_ids else {self.id_column: str}
        fmt = output_format(self.out)
        if fmt == "parquet":
            return pd.read_parquet(self.out), pd.read_csv(self.errors_file, dtype=dtype)
        if fmt != "csv":  # FITS, ECSV, VOTable
            return read_science(self.out), pd.read_csv(self.errors_file, dtype=dtype)
        return pd.read_csv(self.out, dtype=dtype), pd.read_csv(self.errors_file, dtype=dtype)

    def count_not_recentred(self) -> int:
        """Rows of the finished output whose ``recentred`` is False (the plain centre crop)."""
        fmt = output_format(self.out)
        if fmt == "parquet":  # a file, or a directory of Ray parts
            column = pd.read_parquet(self.out, columns=["recentred"])["recentred"]
        elif fmt != "csv":
            column = read_science(self.out)["recentred"]
        else:
            column = pd.read_csv(self.out, usecols=["recentred"])["recentred"]
        return int((~column.to_numpy().astype(bool)).sum())

    @property
    def images_per_second(self) -> float:
        """Inputs handled by this invocation (not the resumed ones) per second."""
        return (self.n_inputs - self.n_resumed) / self.seconds if self.seconds > 0 else float("nan")

    def message(self) -> str:
        """One line for the user: where every input went."""
        return (f"{self.n_inputs} inputs: {self.n_predicted} predicted -> {self.out}, {self.n_failed} failed "
                f"-> {self.errors_file}" + (f" ({self.n_resumed} resumed from an earlier run)"
                                             if self.n_resumed else "")
                + ("" if self.n_not_recentred is None else
                   f"; recentred {self.n_predicted - self.n_not_recentred}, no galaxy found in "
                   f"{self.n_not_recentred} (plain centre crop, recentred = False)")
                + ("" if self.n_adapted is None else
                   f"; BatchNorm statistics adapted on {self.n_adapted} target images"))


@dataclass
class RaySummary(PredictSummary):
    """What a Ray prediction job did; ``out`` and ``errors_file`` are directories of parts."""

    def read(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """All predictions and all error rows as DataFrames, in input order."""
        frame = pd.read_parquet(self.out)
        if any(self.errors_file.glob("part-*.parquet")):
            return frame, pd.read_parquet(self.errors_file)
        return frame, pd.DataFrame(columns=[self.id_column, *ERROR_COLUMNS])
