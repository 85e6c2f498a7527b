"""The model card: the ``README.md`` of a model package, rendered from its facts.

It says what a user needs to decide whether to trust the model and how to run it:
the training data (catalog, counts, label columns), the recipe, the validation RMSE
per question (from the run's ``metrics.jsonl``), the evaluation metrics and triage
thresholds when given, the versions and the SHA-256 of the weights.  The Hugging Face
Hub reads its YAML header (library, tags).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader

from gzmorph.errors import RunError

__all__ = ["read_report", "render_card", "RECIPE_FIELDS"]

TEMPLATES = Path(__file__).resolve().parent / "templates"
# The TrainConfig fields the card lists (the rest are in config.json).
RECIPE_FIELDS = ("optimizer", "lr", "batch_size", "examples", "schedule", "ema_decay", "image_size", "precision",
                 "val_fraction", "split_seed", "seed", "init_from")


@lru_cache(maxsize=1)
def _environment() -> Environment:
    # Markdown, not HTML: no autoescaping (values are numbers, names and paths).
    return Environment(loader=FileSystemLoader(TEMPLATES), autoescape=False, trim_blocks=True, lstrip_blocks=True,
                       keep_trailing_newline=True)


def read_report(report: str | Path | None) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``(metrics, triage thresholds)`` of a ``gzmorph evaluate`` report folder or ``metrics.json``."""
    if report is None:
        return None, None
    report = Path(report)
    folder, metrics_path = (report, report / "metrics.json") if report.is_dir() else (report.parent, report)
    try:
        metrics = json.loads(metrics_path.read_text())
        if not isinstance(metrics, dict) or "per_question" not in metrics:
            raise ValueError("no 'per_question' entry")
    except (OSError, ValueError) as exc:
        raise RunError(f"--report {report}: {metrics_path} is not the metrics.json of `gzmorph evaluate` "
                       f"({exc})") from None
    thresholds_path = folder / "triage_thresholds.json"
    thresholds = json.loads(thresholds_path.read_text()) if thresholds_path.is_file() else metrics.get("triage")
    return metrics, thresholds


def _validation(config: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The validation record of the exported checkpoint (its step, else the best one)."""
    records = [r for r in records if r.get("val_rmse") is not None]
    if not records:
        return None
    step = config["weights"]["step"]
    at_step = [r for r in records if r.get("step") == step]
    chosen = at_step[-1] if at_step else min(records, key=lambda r: r["val_rmse"])
    return {"record": chosen, "first": records[0], "last": records[-1], "n": len(records),
            "questions": chosen.get("val_rmse_questions")}


def render_card(config: dict[str, Any], metrics: list[dict[str, Any]], evaluation: dict[str, Any] | None,
                run_name: str) -> str:
    """The model card (Markdown) of a package.

    Parameters
    ----------
    config : dict
        The package's ``config.json`` content (:mod:`gzmorph.sharing.package`).
    metrics : list of dict
        The run's ``metrics.jsonl`` records.
    evaluation : dict or None
        The ``metrics.json`` of a ``gzmorph evaluate`` report.
    run_name : str
        The run directory's name (the card's title).
    """
    train, data, tree = config["train"], config["data"], config["tree"]
    questions = {q["name"]: q for q in tree["questions"]}
    columns = [c for q in tree["questions"] for c in q["columns"]]
    labelled = data.get("label_columns")
    model = train["model"]
    return _environment().get_template("model_card.md").render(
        c=config, train=train, data=data, tree=tree, questions=questions, n_answers=len(columns),
        label_columns=labelled if labelled is not None else columns, labels_known=labelled is not None,
        architecture=f"{model['family']} symmetric network" if model.get("family") else
        "Dieleman et al. (2015) viewpoint network",
        recipe={k: train.get(k) for k in RECIPE_FIELDS if k in train},
        validation=_validation(config, metrics), evaluation=evaluation,
        triage=config.get("triage_thresholds"), run_name=run_name, augment=config["preprocessing"]["augment"])
