"""The whole job on built-in data: generate, train, predict, evaluate, report.

``gzmorph demo`` needs nothing but the installed package: it writes a mock Galaxy
Zoo dataset (:mod:`gzmorph.mock`) with separate labelled test galaxies, trains the
``small`` preset within a time budget (its validation split picks the best
checkpoint), predicts the test galaxies with test-time averaging, evaluates them
against their crowd labels, writes the HTML report and the analysis figures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gzmorph.metrics import masked_rmse

__all__ = ["DemoConfig", "run_demo"]


@dataclass
class DemoConfig:
    """Size and time budget of the demo.

    The defaults finish in about ten minutes on two CPU cores.

    Parameters
    ----------
    n_galaxies : int
        Mock galaxies to train on (10% of them validate); 10% more are made as test galaxies.
    minutes : float
        Training time budget, a safety cap on slow machines (stops early if spent).
    examples : int
        Training examples: the whole cosine schedule, about 2-4 minutes on 2 cores.
    preset : str
        Training preset.
    tta : {"none", "rot", "paper"}
        Test-time averaging of the predictions.
    seed : int
        Random seed.
    device : str
        auto, cpu, cuda or cuda:N.
    workers : int or None
        Worker processes (None: all cores).
    """

    n_galaxies: int = 3000
    minutes: float = 5.0
    examples: int = 40_000
    preset: str = "small"
    tta: str = "rot"
    seed: int = 0
    device: str = "auto"
    workers: int | None = None

    def __post_init__(self) -> None:
        if self.n_galaxies < 50:
            raise ValueError(f"n_galaxies must be at least 50, got {self.n_galaxies}")
        if self.minutes <= 0:
            raise ValueError(f"minutes must be positive, got {self.minutes}")


def _baseline_rmse(train_labels: np.ndarray, val_labels: np.ndarray) -> float:
    """RMSE of predicting the training mean for every held-out galaxy."""
    mean = np.nanmean(train_labels, axis=0)
    return masked_rmse(np.broadcast_to(mean, val_labels.shape), val_labels)


def run_demo(out: str | Path = "gzmorph-demo", cfg: DemoConfig | None = None, progress: bool = True) -> dict[str, Any]:
    """Run the demo into ``out`` and return its summary.

    Returns
    -------
    dict
        ``rmse``, ``baseline_rmse``, ``accuracy`` (per question), ``report`` (path),
        ``examples`` trained and the seconds each stage took.
    """
    from gzmorph.evaluation.analyze import analyze
    from gzmorph.data.catalog import open_catalog
    from gzmorph.evaluation.evaluate import evaluate
    from gzmorph.mock import generate
    from gzmorph.inference.predict import predict_to_file
    from gzmorph.training.recipes import get_preset
    from gzmorph.training.train import train

    cfg = cfg or DemoConfig()
    out = Path(out)
    data, run, preds, report = out / "data", out / "run", out / "predictions.parquet", out / "report"
    test_labels = data / "test_solutions_rev1.csv"
    times: dict[str, float] = {}

    t = time.monotonic()
    n_test = max(cfg.n_galaxies // 10, 20)
    if not test_labels.exists():
        print(f"[1/5] generating {cfg.n_galaxies} + {n_test} test mock galaxies -> {data}")
        generate(data, n=cfg.n_galaxies, n_test=n_test, seed=cfg.seed, workers=cfg.workers, progress=progress)
    times["generate"] = time.monotonic() - t

    t = time.monotonic()
    train_cfg = get_preset(cfg.preset).override(examples=cfg.examples, seed=cfg.seed)
    print(f"[2/5] training preset {cfg.preset!r} for at most {cfg.minutes:g} minutes -> {run}")
    # A rerun continues an interrupted demo (train starts afresh if no checkpoint was written).
    result = train(train_cfg, data, run, device=cfg.device, workers=cfg.workers, max_minutes=cfg.minutes,
                   progress=progress, resume=(run / "config.json").exists())
    times["train"] = time.monotonic() - t

    # Score galaxies the run never saw: not the validation split that picked best.pt.
    t = time.monotonic()
    test_cat = open_catalog(data, split="test")
    print(f"[3/5] predicting the {len(test_cat)} test galaxies with --tta {cfg.tta} -> {preds}")
    predict_to_file([run], test_cat, preds, tta=cfg.tta, device=cfg.device, workers=cfg.workers,
                    progress=progress)
    times["predict"] = time.monotonic() - t

    t = time.monotonic()
    print(f"[4/5] filters, activations and extreme examples -> {report / 'analysis'}")
    analyze(run, test_cat, report / "analysis", labels=test_labels, device=cfg.device, workers=cfg.workers,
            progress=progress, max_images=500)
    times["analyze"] = time.monotonic() - t

    t = time.monotonic()
    print(f"[5/5] evaluating against the test galaxies' crowd labels -> {report}")
    ev = evaluate(preds, test_labels, report, title="gzmorph demo: small network on mock Galaxy Zoo data")
    times["evaluate"] = time.monotonic() - t

    return _summary(ev, data, test_labels, train_cfg, int(result["examples"]), report, times)


def _summary(ev: Any, data: Path, test_labels: Path, train_cfg: Any, examples: int, report: Path,
             times: dict[str, float]) -> dict[str, Any]:
    """The numbers :func:`run_demo` returns, with the baseline of predicting the training mean."""
    from gzmorph.data.catalog import open_catalog, train_val_split

    train_cat, _ = train_val_split(open_catalog(data), train_cfg.val_fraction, train_cfg.split_seed)
    labels = open_catalog(test_labels)
    accuracy = {r.question: float(r.accuracy) for r in ev.per_question.itertuples() if np.isfinite(r.accuracy)}
    return {
        "rmse": float(ev.rmse),
        "baseline_rmse": _baseline_rmse(train_cat.labels, labels.labels),
        "accuracy": accuracy,
        "examples": examples,
        "n_train": len(train_cat),
        "n_test": len(labels),
        "report": str(report / "report.html"),
        "analysis": str(report / "analysis" / "analysis.html"),
        "seconds": times,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The short text the demo prints at the end."""
    lines = [
        f"trained on {summary['n_train']} mock galaxies ({summary['examples']:,} augmented examples), "
        f"evaluated on {summary['n_test']} test galaxies it never saw",
        f"RMSE {summary['rmse']:.4f}   (predicting the training mean: {summary['baseline_rmse']:.4f})",
        "accuracy per question (most likely answer, crowd vs model, where >= half answered):",
        "  " + "  ".join(f"{q} {a:.2f}" for q, a in summary["accuracy"].items()),
        f"report: {summary['report']}",
        f"analysis figures: {summary['analysis']}",
        "time: " + ", ".join(f"{k} {v:.0f}s" for k, v in summary["seconds"].items()),
    ]
    return "\n".join(lines)
