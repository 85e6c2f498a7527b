"""The evaluation report: one self-contained HTML page with embedded plots.

:func:`write_report` turns an :class:`gzmorph.evaluation.evaluate.Evaluation` into ``report.html``
(every plot embedded as a base64 PNG, so the file can be mailed or archived alone) and
also saves the plots as PNG files under ``plots/``. Per scored question it shows the
paper's Figure 9 (accuracy in bins of crowd agreement and of model confidence), the triage
curve (accuracy of the images the model keeps vs the fraction sent to experts) and the
precision/recall table (the paper's Table 4).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
# Figures are built without pyplot: no global backend switch for the caller (notebooks keep
# theirs), no figure registry to leak, and PNGs render with Agg on a machine without display.
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from gzmorph.evaluation.evaluate import Evaluation

__all__ = ["write_outputs", "write_report", "plot_accuracy_bins", "plot_triage", "plot_rmse", "figure_png"]

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; line-height: 1.45; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
td:nth-child(2) { text-align: left; }
.summary { background: #f6f8fa; border: 1px solid #dde; padding: 0.8em 1.2em; border-radius: 6px; }
.warn { color: #8a4b00; } .muted { color: #777; font-size: 0.9em; }
.figs { display: flex; flex-wrap: wrap; gap: 1em; } .figs img { max-width: 520px; width: 100%; }
"""


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """Render a figure to PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def plot_accuracy_bins(evaluation: "Evaluation", question: str) -> Figure:
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


def plot_triage(evaluation: "Evaluation", question: str) -> Figure:
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


def plot_rmse(evaluation: "Evaluation") -> Figure:
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


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, border=0, na_rep="–", float_format=lambda v: f"{v:.3f}")


def _summary(ev: "Evaluation") -> str:
    tree, n_cols = ev.tree, len(ev.rmse_columns)
    parts = [f"<p><b>{ev.n_matched}</b> images evaluated: ids present in both the predictions "
             f"({ev.n_predictions} rows) and the labels ({ev.n_labels} rows).</p>"]
    for ids, where, other in ((ev.only_in_predictions, "the predictions", "labels"),
                              (ev.only_in_labels, "the labels", "predictions")):
        if len(ids):
            examples = ", ".join(html.escape(str(i)) for i in ids[:5]) + (", …" if len(ids) > 5 else "")
            parts.append(f'<p class="warn">{len(ids)} ids are only in {where} (no {other}; not evaluated): '
                         f"{examples} — all listed in <code>unmatched_ids.csv</code>.</p>")
    parts.append(f"<p>RMSE (Kaggle metric) over the {n_cols} answer columns that have labels: "
                 f"<b>{ev.rmse:.4f}</b>" + (f" (the tree has {tree.n_answers})" if n_cols < tree.n_answers else "")
                 + ".</p>")
    if ev.missing_questions:
        names = ", ".join(ev.missing_questions)
        parts.append(f'<p class="warn"><b>Not evaluated — the labels lack these questions:</b> {names}. '
                     "Their predictions are in the prediction file but cannot be checked here.</p>")
    else:
        parts.append("<p>Every question of the tree has labels.</p>")
    return '<div class="summary">' + "\n".join(parts) + "</div>"


def _question_table(ev: "Evaluation") -> pd.DataFrame:
    pq = ev.per_question[ev.per_question["labelled"]].drop(columns=["labelled"])
    pq = pq.astype({"n_reached": int, "threshold": object})
    pq.loc[pq["threshold"].astype(float) > 1, "threshold"] = "none: all to experts"
    return pq.rename(columns={"n_answers": "answers", "n_images": "images",
                              "n_reached": f"reached ≥ {ev.config.min_reach:g}",
                              "mean_agreement": "mean agreement", "mean_confidence": "mean confidence",
                              "threshold": "triage threshold", "coverage": "model alone"})


def _triage_table(ev: "Evaluation") -> pd.DataFrame:
    tri = ev.triage.drop(columns=["target_accuracy"]).astype({"threshold": object})
    tri.loc[~tri["reached_target"], "threshold"] = "none: all to experts"
    return tri


def _unlabelled_list(ev: "Evaluation") -> str:
    if not ev.missing_questions:
        return ""
    partial = set(ev.per_question.loc[ev.per_question["rmse"].notna() & ~ev.per_question["labelled"], "question"])
    items = "".join(f"<li>{name}: {html.escape(ev.tree.question(name).text)}"
                    + (" (some of its answer columns only: counted in the RMSE)" if name in partial else "")
                    + "</li>" for name in ev.missing_questions)
    return f'<p class="warn">Not evaluated, no labels:</p><ul class="warn">{items}</ul>'


def _pr_table(ev: "Evaluation", question: str) -> pd.DataFrame:
    pr = ev.precision_recall[ev.precision_recall["question"] == question].copy()
    pr["precision"] = pr["precision"].astype(object).where(~pr["never_predicted"], "never predicted")
    return pr.drop(columns=["question", "never_predicted"])


def _question_section(ev: "Evaluation", question: str, figures: dict[str, bytes]) -> str:
    q = ev.tree.question(question)
    tri = ev.triage.set_index("question").loc[question]
    target = ev.config.target_accuracy
    if tri["n_reached"] == 0:
        return (f"<h3>{question}: {html.escape(q.text)}</h3><p class='warn'>No image has labels reaching this "
                f"question (crowd reach ≥ {ev.config.min_reach:g}): nothing to score.</p>")
    if tri["reached_target"]:
        verdict = (f"The model can answer <b>{tri['coverage']:.1%}</b> of the reached images alone "
                   f"(confidence ≥ {tri['threshold']:.3g}) at accuracy {tri['accuracy_kept']:.3f} ≥ {target:g}.")
    else:
        verdict = (f'<span class="warn">No confidence level reaches accuracy {target:g}: every reached image '
                   f"goes to experts (threshold {tri['threshold']:g} &gt; 1).</span>")
    return "\n".join([
        f"<h3>{question}: {html.escape(q.text)}</h3><p>{verdict}</p>",
        '<div class="figs">' + _img(figures[f"{question}_accuracy"], f"{question} accuracy vs agreement")
        + _img(figures[f"{question}_triage"], f"{question} triage") + "</div>",
        _table(_pr_table(ev, question)),
    ])


def _figures(ev: "Evaluation", plot_dir: Path) -> dict[str, bytes]:
    """Render every plot, save it under ``plot_dir`` and return the PNG bytes by name."""
    plot_dir.mkdir(parents=True, exist_ok=True)
    figures = {"rmse": figure_png(plot_rmse(ev))}
    for name in ev.triage.loc[ev.triage["n_reached"] > 0, "question"]:
        figures[f"{name}_accuracy"] = figure_png(plot_accuracy_bins(ev, name))
        figures[f"{name}_triage"] = figure_png(plot_triage(ev, name))
    for name, png in figures.items():
        (plot_dir / f"{name}.png").write_bytes(png)
    return figures


_DEFINITIONS = """
<h2>Definitions</h2>
<ul>
<li><b>RMSE</b>: square root of the mean squared difference between predicted and crowd probabilities over
all matched images and labelled answer columns (the Kaggle Galaxy Challenge metric).</li>
<li><b>Accuracy</b>: fraction of images where the model's most likely answer equals the crowd's, counted on
the images where at least {reach:.0%} of the volunteers reached the question (crowd reach ≥ {reach:g}).</li>
<li><b>Agreement / confidence</b>: a = 1 − H/log n of the renormalised answers of the crowd (agreement) or of
the model (confidence); 1 is unanimous, 0 all answers equally likely. Bins hold equal numbers of images.</li>
<li><b>Precision / recall</b> of an answer: of the images where the model (crowd) picks it, the fraction where
the crowd (model) does too. <i>Never predicted</i>: the model never picks this answer.</li>
<li><b>Triage</b>: the model answers a reached question alone when its confidence is at least the threshold;
the threshold is the lowest one whose kept images reach accuracy {target:g}. A threshold above 1 means no
threshold reaches it: every reached image goes to experts. <code>triage_thresholds.json</code> holds the
thresholds for <code>gzmorph predict --triage-thresholds</code>.</li>
</ul>
"""


def write_report(evaluation: "Evaluation", out_dir: str | Path, title: str = "gzmorph evaluation report") -> Path:
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
    figures = _figures(ev, out_dir / "plots")
    sources = " · ".join(f"{k}: <code>{html.escape(v)}</code>" for k, v in ev.sources.items())
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    scored = [q for q in ev.evaluated_questions if q in set(ev.triage["question"])]
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="muted">tree {html.escape(ev.tree.name)} · {sources} · {stamp}</p>',
        _summary(ev),
        "<h2>Per question</h2>", _table(_question_table(ev)), _unlabelled_list(ev),
        _img(figures["rmse"], "RMSE per question"),
        f"<h2>Triage at accuracy {ev.config.target_accuracy:g}</h2>",
        "<p>The fraction of reached images the model can answer alone and the confidence threshold that "
        "achieves it; the rest go to experts.</p>",
        _table(_triage_table(ev)),
        "<h2>Questions in detail</h2>",
        *(_question_section(ev, q, figures) for q in scored),
        _DEFINITIONS.format(reach=ev.config.min_reach, target=ev.config.target_accuracy),
    ]
    # `gzmorph analyze --out REPORT/analysis` puts the network's figures beside the report.
    if (out_dir / "analysis" / "analysis.html").exists():
        body.insert(3, '<p>Inside the network (filters, activations, units, extreme examples): '
                       '<a href="analysis/analysis.html">analysis/analysis.html</a></p>')
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
    path = out_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def write_outputs(evaluation: "Evaluation", out: str | Path, title: str | None = None) -> Path:
    """Write every file of an evaluation into ``out`` and return the report path.

    ``metrics.json`` (summary), ``triage_thresholds.json`` (for ``gzmorph predict``),
    ``per_question.csv``, ``precision_recall.csv``, ``triage.csv``, ``accuracy_bins.csv``,
    ``triage_curves.csv``, ``unmatched_ids.csv`` (ids present on one side only, with
    ``present_in``), ``plots/*.png`` and ``report.html``.
    """
    from gzmorph.runtime import write_json

    ev, out = evaluation, Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(ev.to_metrics(), out / "metrics.json")
    write_json(ev.thresholds_dict(), out / "triage_thresholds.json")
    tables = {"per_question": ev.per_question, "precision_recall": ev.precision_recall, "triage": ev.triage,
              "accuracy_bins": ev.bins, "triage_curves": ev.triage_curves}
    for name, table in tables.items():
        table.to_csv(out / f"{name}.csv", index=False)
    pd.DataFrame({
        "id": np.concatenate([ev.only_in_predictions, ev.only_in_labels]).astype(object),
        "present_in": ["predictions"] * len(ev.only_in_predictions) + ["labels"] * len(ev.only_in_labels),
    }).to_csv(out / "unmatched_ids.csv", index=False)
    return write_report(ev, out, **({"title": title} if title else {}))
