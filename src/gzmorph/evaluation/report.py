"""The evaluation report: one self-contained HTML page with embedded plots.

:func:`write_report` turns an :class:`gzmorph.evaluation.results.Evaluation` into ``report.html``
(every plot embedded as a base64 PNG, so the file can be mailed or archived alone) and
also saves the plots as PNG files under ``plots/``. Per scored question it shows the
paper's Figure 9 (accuracy in bins of crowd agreement and of model confidence), the triage
curve (accuracy of the images the model keeps vs the fraction sent to experts) and the
precision/recall table (the paper's Table 4).
"""

from __future__ import annotations

import datetime as _dt
import io
from pathlib import Path

import numpy as np
import pandas as pd
# Figures are built without pyplot: no global backend switch for the caller (notebooks keep
# theirs), no figure registry to leak, and PNGs render with Agg on a machine without display.
from matplotlib.figure import Figure

from gzmorph.evaluation.html import png_data_uri, render, table_html
from gzmorph.evaluation.results import Evaluation

__all__ = ["write_outputs", "write_report", "plot_accuracy_bins", "plot_triage", "plot_reliability", "plot_rmse", "figure_png"]

def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """Render a figure to PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def plot_accuracy_bins(evaluation: Evaluation, question: str) -> Figure:
    """The paper's Figure 9 for one question: accuracy per bin of agreement / confidence.

    Images are ranked by crowd agreement and, separately, by model confidence and cut into
    equal-count bins; each bin's accuracy is drawn at its mean agreement (confidence). The
    dashed line is the overall accuracy, the dotted one chance level (1/n answers).
    """
    row = evaluation.per_question.set_index("question").loc[question]
    bins = evaluation.bins[evaluation.bins["question"] == question]
    fig = Figure(figsize=(5.2, 3.6))
    ax = fig.subplots()
    for ranking, style, label in (("agreement", "o-", "crowd agreement"), ("confidence", "s-", "model confidence")):
        b = bins[bins["ranking"] == ranking]
        ax.plot(b["mean"], b["accuracy"], style, ms=4, label=label)
    ax.axhline(row["accuracy"], ls="--", c="0.3", lw=1, label=f"overall accuracy {row['accuracy']:.3f}")
    ax.axhline(row["chance"], ls=":", c="0.5", lw=1, label=f"chance 1/{int(row['n_answers'])}")
    ax.set(xlim=(0, 1), ylim=(min(row["chance"], bins["accuracy"].min()) - 0.05, 1.02),
           xlabel="agreement / confidence  a = 1 - H / log n", ylabel="accuracy",
           title=f"{question}: accuracy vs agreement ({int(row['n_reached'])} images)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def plot_triage(evaluation: Evaluation, question: str) -> Figure:
    """Accuracy on the images the model keeps vs the fraction sent to experts."""
    curve = evaluation.triage_curves[evaluation.triage_curves["question"] == question]
    tri = evaluation.triage.set_index("question").loc[question]
    target = evaluation.config.target_accuracy
    fig = Figure(figsize=(5.2, 3.6))
    ax = fig.subplots()
    ax.plot(curve["fraction_to_experts"], curve["accuracy"], "-", lw=1.5, label="model keeps the most confident")
    ax.axhline(target, ls="--", c="tab:red", lw=1, label=f"target {target:g}")
    if tri["reached_target"]:
        ax.axvline(tri["to_experts"], ls=":", c="0.3", lw=1,
                   label=f"{tri['to_experts']:.1%} to experts (a < {tri['threshold']:.3f})")
    ax.set(xlim=(0, 1), ylim=(max(0.0, curve["accuracy"].min() - 0.05), 1.005),
           xlabel="fraction of reached images sent to experts", ylabel="accuracy of the model's answers",
           title=f"{question}: triage")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return fig


def plot_reliability(evaluation: Evaluation, question: str, kind: str) -> Figure:
    """Reliability diagram of one question: ``kind="top"`` (accuracy of the most likely
    answer vs its probability) or ``"fraction"`` (crowd vs predicted value per answer)."""
    rel = evaluation.reliability
    rel = rel[(rel["question"] == question) & (rel["kind"] == kind)]
    fig = Figure(figsize=(5.2, 3.6))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], ":", c="0.5", lw=1, label="perfect")
    for column, b in rel.groupby("column", sort=False):
        label = f"most likely answer: {column}" if kind == "top" else column
        ax.plot(b["predicted"], b["observed"], "o-", ms=3, lw=1, label=label)
    if kind == "top":
        cal = evaluation.calibration[evaluation.calibration["question"] == question]
        title = f"{question}: accuracy vs probability (ECE " + ", ".join(f"{e:.3f}" for e in cal["ece"]) + ")"
        xlabel, ylabel = "predicted probability of the most likely answer", "accuracy (crowd agrees)"
    else:
        title, xlabel, ylabel = f"{question}: fractions", "predicted fraction", "crowd fraction"
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    return fig


def plot_rmse(evaluation: Evaluation) -> Figure:
    """RMSE per question (questions with any label) and overall."""
    pq = evaluation.per_question.dropna(subset=["rmse"])
    fig = Figure(figsize=(max(4.0, 0.6 * len(pq) + 2), 3.2))
    ax = fig.subplots()
    ax.bar(pq["question"], pq["rmse"], color="tab:blue")
    ax.axhline(evaluation.rmse, ls="--", c="0.3", lw=1, label=f"overall {evaluation.rmse:.4f}")
    ax.set(ylabel="RMSE", title="RMSE per question")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig


def _question_table(ev: Evaluation) -> pd.DataFrame:
    pq = ev.per_question[ev.per_question["labelled"]].drop(columns=["labelled"])
    pq = pq.astype({"n_reached": int, "threshold": object})
    pq.loc[pq["threshold"].astype(float) > 1, "threshold"] = "none: all to experts"
    return pq.rename(columns={"n_answers": "answers", "n_images": "images",
                              "n_reached": f"reached ≥ {ev.config.min_reach:g}",
                              "mean_agreement": "mean agreement", "mean_confidence": "mean confidence",
                              "threshold": "triage threshold", "coverage": "model alone"})


def _triage_table(ev: Evaluation) -> pd.DataFrame:
    tri = ev.triage.drop(columns=["target_accuracy"]).astype({"threshold": object})
    tri.loc[~tri["reached_target"], "threshold"] = "none: all to experts"
    return tri


def _unlabelled(ev: Evaluation) -> list[dict]:
    partial = set(ev.per_question.loc[ev.per_question["rmse"].notna() & ~ev.per_question["labelled"], "question"])
    return [dict(name=name, text=ev.tree.question(name).text, partial=name in partial)
            for name in ev.missing_questions]


def _pr_table(ev: Evaluation, question: str) -> pd.DataFrame:
    pr = ev.precision_recall[ev.precision_recall["question"] == question].copy()
    pr["precision"] = pr["precision"].astype(object).where(~pr["never_predicted"], "never predicted")
    return pr.drop(columns=["question", "never_predicted"])


def _question(ev: Evaluation, question: str) -> dict:
    """What the report says about one scored question."""
    tri = ev.triage.set_index("question").loc[question]
    return dict(name=question, text=ev.tree.question(question).text, reached=bool(tri["n_reached"] > 0),
                reached_target=bool(tri["reached_target"]), coverage=float(tri["coverage"]),
                threshold=float(tri["threshold"]), accuracy_kept=float(tri["accuracy_kept"]),
                table=table_html(_pr_table(ev, question)))


def _figures(ev: Evaluation, plot_dir: Path) -> dict[str, bytes]:
    """Render every plot, save it under ``plot_dir`` and return the PNG bytes by name."""
    plot_dir.mkdir(parents=True, exist_ok=True)
    figures = {"rmse": figure_png(plot_rmse(ev))}
    for name in ev.triage.loc[ev.triage["n_reached"] > 0, "question"]:
        figures[f"{name}_accuracy"] = figure_png(plot_accuracy_bins(ev, name))
        figures[f"{name}_triage"] = figure_png(plot_triage(ev, name))
        figures[f"{name}_reliability"] = figure_png(plot_reliability(ev, name, "top"))
        figures[f"{name}_fractions"] = figure_png(plot_reliability(ev, name, "fraction"))
    for name, png in figures.items():
        (plot_dir / f"{name}.png").write_bytes(png)
    return figures


def write_report(evaluation: Evaluation, out_dir: str | Path, title: str = "gzmorph evaluation report") -> Path:
    """Write ``report.html`` (self-contained) and ``plots/*.png`` into ``out_dir``.

    Parameters
    ----------
    evaluation : Evaluation
        Result of :func:`gzmorph.evaluation.evaluate.evaluate`.
    out_dir : path
        Folder to write into (created if needed).
    title : str
        Page title.

    Returns
    -------
    Path
        The report file.
    """
    ev, out_dir = evaluation, Path(out_dir)
    figures = {name: png_data_uri(png) for name, png in _figures(ev, out_dir / "plots").items()}
    unmatched = [dict(ids=[str(i) for i in ids], where=where, other=other)
                 for ids, where, other in ((ev.only_in_predictions, "the predictions", "labels"),
                                           (ev.only_in_labels, "the labels", "predictions")) if len(ids)]
    scored = [q for q in ev.evaluated_questions if q in set(ev.triage["question"])]
    page = render("report.html", title=title, ev=ev, stamp=_dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
                  unmatched=unmatched, figures=figures, question_table=table_html(_question_table(ev)),
                  unlabelled=_unlabelled(ev), triage_table=table_html(_triage_table(ev)),
                  questions=[_question(ev, q) for q in scored],
                  calibration_table=table_html(ev.calibration),
                  calibration_source=" and ".join(sorted(set(ev.calibration["source"]))) or "none",
                  coverage_table=table_html(ev.coverage_table.drop(columns=["level"])) if len(ev.coverage_table) else "",
                  coverage_level=(float(ev.coverage_table["level"].iloc[0]) if len(ev.coverage_table)
                                  and pd.notna(ev.coverage_table["level"].iloc[0]) else None),
                  # `gzmorph analyze --out REPORT/analysis` puts the network's figures beside the report.
                  analysis_link=(out_dir / "analysis" / "analysis.html").exists())
    path = out_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


#: What :func:`write_outputs` writes into its folder (checked against the inputs first).
OUTPUT_FILES = ("metrics.json", "triage_thresholds.json", "per_question.csv", "precision_recall.csv", "triage.csv",
                "accuracy_bins.csv", "triage_curves.csv", "unmatched_ids.csv", "calibration.csv", "reliability.csv",
                "interval_coverage.csv", "report.html")
OUTPUT_FOLDERS = ("plots", "analysis")


def write_outputs(evaluation: Evaluation, out: str | Path, title: str | None = None) -> Path:
    """Write every file of an evaluation into ``out`` and return the report path.

    ``metrics.json`` (summary), ``triage_thresholds.json`` (for ``gzmorph predict``),
    ``per_question.csv``, ``precision_recall.csv``, ``triage.csv``, ``accuracy_bins.csv``,
    ``triage_curves.csv``, ``unmatched_ids.csv`` (ids present on one side only, with
    ``present_in``), ``plots/*.png`` and ``report.html``.
    """
    from gzmorph.outputs import claim_folder, mark_folder
    from gzmorph.runtime import write_json

    ev, out = evaluation, Path(out)
    # The shared output guard: a new/empty folder or an earlier report, never a user's folder.
    claim_folder(out, "report", what="evaluation report (gzmorph evaluate)")
    mark_folder(out, "report")
    write_json(ev.to_metrics(), out / "metrics.json")
    write_json(ev.thresholds_dict(), out / "triage_thresholds.json")
    tables = {"per_question": ev.per_question, "precision_recall": ev.precision_recall, "triage": ev.triage,
              "accuracy_bins": ev.bins, "triage_curves": ev.triage_curves, "calibration": ev.calibration,
              "reliability": ev.reliability, "interval_coverage": ev.coverage_table}
    for name, table in tables.items():
        table.to_csv(out / f"{name}.csv", index=False)
    pd.DataFrame({
        ev.id_column: np.concatenate([ev.only_in_predictions, ev.only_in_labels]).astype(object),
        "present_in": ["predictions"] * len(ev.only_in_predictions) + ["labels"] * len(ev.only_in_labels),
    }).to_csv(out / "unmatched_ids.csv", index=False)
    if len(ev.dropped_rows):
        ev.dropped_rows.to_csv(out / "dropped_rows.csv", index=False)
    return write_report(ev, out, **({"title": title} if title else {}))
