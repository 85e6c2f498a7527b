"""How far a model trained on SDSS-like images carries to other surveys, and how few labels it needs there.

The same mock galaxies (:mod:`gzmorph.mock`) are rendered three ways: SDSS-like
GZ2 JPEGs (96 px at 0.3975"/px; training and the in-survey test) and, through
:mod:`gzmorph.mock.surveys`, Legacy-like (100 px at 0.262"/px, deeper, g r z, another
stretch) and HSC-like cutouts (160 px at 0.168"/px, half the seeing, much deeper,
another stretch).  Every cutout covers about 26" where the SDSS-like image covers
38": a fixed pixel count, as cutout services give, so galaxies look larger.  The test
galaxies are the same in the three renderings, with their true crowd labels; the
target-survey labelled sets for fine-tuning are other galaxies (another seed).

Rows (Kaggle RMSE over the 37 answers, ``which="last"``: the averaged weights):

* ``in-survey``: ``p4m`` trained and tested on SDSS-like images;
* zero-shot on each target survey: ``nothing`` (the ``p4m`` run as is), ``+ pixel scale``
  (``predict(pixel_scale=...)``: the survey's arcsec/px folded into the crop warp),
  ``+ augmentation`` (the ``p4m-robust`` run instead), ``+ adaptation`` (``adapt_bn``:
  batch-norm statistics re-estimated on the target images), ``+ recentre`` (the zoom
  from each galaxy's measured size where one is found); and, apart from that cumulative
  chain, ``p4m + pixel scale + adaptation``: adaptation on the ``p4m`` run, to tell what
  the survey-robust augmentation adds once the statistics are adapted;
* fine-tuned: the ``p4m-robust`` run fine-tuned (``finetune-small-labels``, ``init_from``)
  on 100, 500 and 2,000 labelled target cutouts, tested on the target survey; ``fine-tuned
  from p4m``: the same from the ``p4m`` run.

Three training seeds (the data is the same), mean and standard deviation.  Every
result is one JSON line in ``OUT/results.jsonl``; a rerun skips what is there.

Usage::

    python benchmarks/cross_survey.py --out runs/cross-survey            # the table (about 30 min on 2 cores)
    python benchmarks/cross_survey.py --out /tmp/cs --quick               # a smoke run (2 minutes)
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

TRAIN_SIDE = 96
VIEWS = {"legacy": 100, "hsc": 160}  # cutout sides (px): ~26" at each survey's scale
ZERO_SHOT = ("nothing", "+ pixel scale", "+ augmentation", "+ adaptation", "+ recentre",
             "p4m + pixel scale + adaptation")
#: (starting run, row prefix, run-name tag) of the fine-tuned rows
FINE_TUNED = (("p4m-robust", "fine-tuned", ""), ("p4m", "fine-tuned from p4m", "p4m-"))
NO_AUGMENT = ("nothing", "+ pixel scale", "p4m + pixel scale + adaptation")  # rows on the p4m run
ADAPTED = ("+ adaptation", "+ recentre", "p4m + pixel scale + adaptation")  # rows with adapt_bn


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def make_data(out: Path, args: argparse.Namespace) -> dict[str, Path]:
    """The SDSS-like set, each survey's test cutouts (same galaxies) and labelled cutouts (other galaxies)."""
    from gzmorph.mock import generate

    plan = {"sdss": dict(n=args.n_train, n_test=args.n_test, seed=args.data_seed, size=TRAIN_SIDE)}
    for name, side in VIEWS.items():
        plan[f"{name}-test"] = dict(n=0, n_test=args.n_test, seed=args.data_seed, size=side, view=name)
        plan[f"{name}-labelled"] = dict(n=max(args.labels), n_test=0, seed=args.data_seed + 1, size=side, view=name)
    folders = {}
    for key, kw in plan.items():
        folder = out / "data" / key
        meta = folder / ".gzmorph.json"  # the marker records how the set was made
        done = meta.exists() and all(json.loads(meta.read_text()).get(k) == v for k, v in kw.items())
        if not done:
            t0 = time.monotonic()
            generate(folder, workers=args.workers, progress=False, **kw)
            print(f"rendered {key} in {time.monotonic() - t0:.0f}s", flush=True)
        folders[key] = folder
    return folders


def rmse(df: pd.DataFrame, labels_csv: Path) -> float:
    """Kaggle RMSE over the 37 answers of the galaxies both tables hold (every test galaxy must be there)."""
    from gzmorph.tree import GZ2

    truth = pd.read_csv(labels_csv)
    merged = truth[["GalaxyID", *GZ2.columns]].merge(df[["GalaxyID", *GZ2.columns]], on="GalaxyID",
                                                     suffixes=("", "_pred"))
    if len(merged) != len(truth):
        raise RuntimeError(f"{len(truth) - len(merged)} test galaxies have no prediction")
    t = merged[GZ2.columns].to_numpy(np.float64)
    p = merged[[c + "_pred" for c in GZ2.columns]].to_numpy(np.float64)
    return float(np.sqrt(np.mean((t - p) ** 2)))


def _scale_fields(pixscale: float, side: int) -> dict:
    """The run's recorded pixel scale (when this gzmorph records one)."""
    from gzmorph.models.trainconfig import TrainConfig

    return {"pixel_scale": pixscale, "pixel_scale_side": side} if "pixel_scale" in _fields(TrainConfig) else {}


def train_run(preset: str, data: Path, run: Path, seed: int, args: argparse.Namespace, **changes) -> Path:
    from gzmorph.models.trainconfig import TrainConfig
    from gzmorph.runtime import load_checkpoint
    from gzmorph.training.recipes import get_preset
    from gzmorph.training.train import train

    last = run / "checkpoints" / "last.pt"
    if last.exists():
        ckpt = load_checkpoint(last)
        if int(ckpt["step"]) >= TrainConfig.from_dict(ckpt["config"]).steps:
            return run
        # a run killed before its end is not done: it goes on from its last checkpoint
    cfg = get_preset(preset).override(seed=seed, **changes)
    t0, load = time.monotonic(), os.getloadavg()[0]
    result = train(cfg, data, run, device="cpu", workers=args.workers, progress=False, resume=last.exists())
    print(f"trained {run.name}: {result['examples']} examples in {time.monotonic() - t0:.0f}s "
          f"(load {load:.1f}), val RMSE {result['last_val_rmse']:.4f}", flush=True)
    return run


def predict_rmse(run: Path, folder: Path, **options) -> float:
    from gzmorph.inference.config import PredictConfig
    from gzmorph.inference.predict import predict

    known = _fields(PredictConfig)
    missing = sorted(k for k in options if k not in known)
    if missing:
        raise NotImplementedError(f"this gzmorph's predict has no {', '.join(missing)}")
    df = predict([run], folder, split="test", device="cpu", progress=False, which="last", **options)
    if len(df.attrs.get("errors", [])):
        raise RuntimeError(f"{len(df.attrs['errors'])} images failed in {folder}: {df.attrs['errors'][:3]}")
    return rmse(df, folder / "test_solutions_rev1.csv")


def subset_catalog(folder: Path, k: int) -> Path:
    """A catalog of the first ``k`` labelled cutouts of ``folder`` (id, path, labels)."""
    path = folder / f"first{k}.csv"
    if not path.exists():
        table = pd.read_csv(folder / "training_solutions_rev1.csv").head(k)
        table.insert(1, "path", [f"images_training_rev1/{g}.jpg" for g in table["GalaxyID"]])
        table.to_csv(path, index=False)
    return path


def zero_shot_options(row: str, pixscale: float) -> tuple[str, dict]:
    """Which base run and which predict options a zero-shot row uses (each row of the chain adds to the one
    above; ``p4m + pixel scale + adaptation`` is the adaptation row without the augmentation)."""
    opts: dict = {}
    if row != "nothing":
        opts["pixel_scale"] = pixscale
    if row in ADAPTED:
        opts["adapt_bn"] = True
    if row == "+ recentre":
        # The measured galaxy size sets the zoom where a galaxy is found (the pixel scale elsewhere).
        opts["recentre"] = True
    return ("p4m" if row in NO_AUGMENT else "p4m-robust"), opts


def one_seed(seed: int, data: dict[str, Path], out: Path, args: argparse.Namespace, done: set, log) -> None:
    from gzmorph.mock.surveys import SURVEY_VIEWS

    def record(row: str, survey: str, value: float | None, note: str = "") -> None:
        rec = {"seed": seed, "row": row, "survey": survey, "rmse": value, "note": note,
               "load_avg_1min": round(os.getloadavg()[0], 2)}
        log.write(json.dumps(rec) + "\n")
        log.flush()
        print(json.dumps(rec), flush=True)

    # The mock field is the field a run records by default (FIELD_ARCSEC): no pixel scale to give.
    base = dict(examples=args.examples, eval_every=max(1, args.examples // 4), image_size=TRAIN_SIDE)
    runs = {p: train_run(p, data["sdss"], out / "runs" / f"{p}-s{seed}", seed, args, **base)
            for p in ("p4m", "p4m-robust")}
    for p, row in (("p4m", "in-survey"), ("p4m-robust", "in-survey, p4m-robust")):
        if (row, "sdss") not in done:
            record(row, "sdss", predict_rmse(runs[p], data["sdss"]))
    for survey, side in VIEWS.items():
        pixscale = SURVEY_VIEWS[survey].pixscale
        for row in ZERO_SHOT:
            if (row, survey) in done:
                continue
            preset, opts = zero_shot_options(row, pixscale)
            try:
                record(row, survey, predict_rmse(runs[preset], data[f"{survey}-test"], **opts))
            except Exception as exc:  # noqa: BLE001 - one row failing must not lose the others
                record(row, survey, None, f"{type(exc).__name__}: {exc}")
        for (base, prefix, tag), k in itertools.product(FINE_TUNED, args.labels):
            row = f"{prefix}, {k} labels"
            if (row, survey) in done:
                continue
            try:
                ft = train_run("finetune-small-labels", subset_catalog(data[f"{survey}-labelled"], k),
                               out / "runs" / f"ft-{tag}{survey}-{k}-s{seed}", seed, args,
                               init_from=str(runs[base]), image_size=TRAIN_SIDE, examples=args.ft_examples,
                               **_scale_fields(pixscale, side))
                opts = {"pixel_scale": pixscale} if _scale_fields(pixscale, side) else {}
                record(row, survey, predict_rmse(ft, data[f"{survey}-test"], **opts))
            except Exception as exc:  # noqa: BLE001
                record(row, survey, None, f"{type(exc).__name__}: {exc}")


def table(results: list[dict]) -> str:
    """The markdown table: mean ± sd over seeds, one column per survey."""
    frame = pd.DataFrame([r for r in results if r["rmse"] is not None])
    rows = ["in-survey", "in-survey, p4m-robust", *(f"zero-shot, {r}" for r in ZERO_SHOT)]
    rows += sorted({r for r in frame["row"] if r.startswith("fine-tuned")},
                   key=lambda r: (r.split(",")[0] != "fine-tuned", int(r.split(", ")[1].split()[0])))
    lines = ["| | SDSS-like (in-survey) | Legacy-like | HSC-like |", "|---|---:|---:|---:|"]
    for row in rows:
        key = row.removeprefix("zero-shot, ")
        cells = []
        for survey in ("sdss", *VIEWS):
            v = frame[(frame["row"] == key) & (frame["survey"] == survey)]["rmse"]
            cells.append(f"{v.mean():.4f} ± {v.std(ddof=1) if len(v) > 1 else 0:.4f} (n={len(v)})" if len(v) else "")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(results: list[dict]) -> str:
    """The issue's two targets, per survey, from the seed means."""
    frame = pd.DataFrame([r for r in results if r["rmse"] is not None])

    def mean(row: str, survey: str) -> float:
        v = frame[(frame["row"] == row) & (frame["survey"] == survey)]["rmse"]
        return float(v.mean()) if len(v) else float("nan")

    ins = mean("in-survey", "sdss")
    out = []
    for survey in VIEWS:
        plain, best = mean("nothing", survey), mean("+ adaptation", survey)
        closed = (plain - best) / (plain - ins) if plain > ins else float("nan")
        ft = mean("fine-tuned, 500 labels", survey)
        out.append(f"{survey}: gap closed by pixel scale + augmentation + adaptation {closed:.0%} (target >= 50%); "
                   f"500 labels {ft / ins - 1:+.1%} of in-survey (target <= +10%)")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/cross-survey"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--n-train", type=int, default=3000, help="SDSS-like training galaxies")
    p.add_argument("--n-test", type=int, default=300, help="test galaxies (the same in every survey)")
    p.add_argument("--labels", type=int, nargs="+", default=[100, 500, 2000], help="target labels for fine-tuning")
    p.add_argument("--examples", type=int, default=24_000, help="training examples of the SDSS-like runs")
    p.add_argument("--ft-examples", type=int, help="fine-tuning examples (default: the preset's)")
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="a smoke run: tiny sets and schedules, one seed")
    args = p.parse_args()
    if args.quick:
        args.seeds, args.n_train, args.n_test, args.labels, args.examples = [0], 200, 40, [40], 640
        args.ft_examples = 320
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    data = make_data(args.out, args)
    path = args.out / "results.jsonl"
    results = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
    with open(path, "a") as log:
        for seed in args.seeds:
            done = {(r["row"], r["survey"]) for r in results if r["seed"] == seed and r["rmse"] is not None}
            one_seed(seed, data, args.out, args, done, log)
    results = [json.loads(x) for x in path.read_text().splitlines()]
    print(f"\n{table(results)}\n\n{targets(results)}\n\nwall {time.monotonic() - t0:.0f}s, "
          f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
