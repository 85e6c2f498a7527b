"""Calibration, intervals and triage before and after ``gzmorph calibrate`` (issue 21).

``real``: a run trained on the shared 5k split's first 4,000 training galaxies; its
calibration split is the development split (training ranks 4,001-4,500, never the
reported split); everything is reported on the 500 validation galaxies::

    python benchmarks/calibration.py real --run /work/runs/p4m-dev --which last \
        --dev /work/runs/dev500.csv --val /work/runs/val500.csv --out /tmp/calib-bench/real

``mock``: mock galaxies with the simulated volunteers' counts; one run trained with the
masked MSE, one with the Dirichlet-multinomial loss (``--runs``), calibrated on the runs'
own held-out split, scored on the mock test galaxies::

    python benchmarks/calibration.py mock --data MOCK --runs mse=RUN1 dm=RUN2 --out OUT

Interval sources compared (80%): ``views`` the 10-90% spread of the model over 6
test-time views (rotations 0 and 22.5 degrees x scales 1/1.2, 1, 1.2), ``views-scaled`` the views' mean +- a per-answer
multiple of their standard deviation fitted on the calibration split, ``calibrated`` the
beta-binomial intervals with vote noise of :mod:`gzmorph.inference.calibrator`, and for
a Dirichlet run ``dirichlet`` its own concentrations (the Dirichlet-multinomial
predictive with the galaxy's vote count, root questions only: Q1, Q6).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

VIEWS = [(a, s, False) for a in (0.0, 22.5) for s in (1 / 1.2, 1.0, 1.2)]
LEVEL = 0.8
OUT = Path(".")
REUSE: Path | None = None
SCORED = ("Q1", "Q2", "Q6", "Q7", "Q8")


@torch.inference_mode()
def per_view(run_dir: str, catalog, which: str, batch: int = 100) -> tuple[np.ndarray, np.ndarray | None]:
    """``(V, N, A)`` fractions over :data:`VIEWS` and, for a Dirichlet head, ``(N, A)`` concentrations."""
    from gzmorph.data.source import open_source
    from gzmorph.nn import augment as aug
    from gzmorph.models.rundir import load_run

    run = load_run(run_dir, which=which, device="cpu")
    src = open_source(catalog)
    images, failed, _ = src.load(run.image_size, workers=1, progress=False, recentre=False)
    assert not failed, failed[:3]
    dirichlet = getattr(run.model.cfg, "output", "fractions") == "dirichlet"
    views, alpha = [], []
    for angle, scale, flip in VIEWS:
        out = []
        for i in range(0, len(images), batch):
            x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch]))
            t = aug.fixed_transforms(len(x), angle=angle, scale=scale, flip=flip)
            crops = aug.render_crops(x, t, run.augment, run.pca)
            out.append(run.model(crops).float().numpy())
            if dirichlet and angle == 0.0 and scale == 1.0:
                alpha.append(run.model(crops, concentrations=True).float().numpy())
        views.append(np.concatenate(out))
    return np.stack(views), (np.concatenate(alpha) if alpha else None)


def ece_top(pred, lab, sl, prob=None):
    from gzmorph.evaluation.calibration import ece, ece_interval
    from gzmorph.inference.calibrator import conditional

    use = np.isfinite(lab[:, sl]).all(1) & (lab[:, sl].sum(1) >= 0.5 - 1e-6)
    cond = conditional(pred[use], sl)
    right = (cond.argmax(1) == lab[use, sl].argmax(1)).astype(float)
    p = cond.max(1) if prob is None else prob[use]
    lo, hi = ece_interval(p, right)
    return dict(n=int(use.sum()), accuracy=float(right.mean()), mean_p=float(p.mean()), ece=ece(p, right),
                ece_lo=lo, ece_hi=hi)


def coverage(lab, lo, hi, tree):
    out = {}
    for j, c in enumerate(tree.columns):
        ok = np.isfinite(lab[:, j]) & np.isfinite(lo[:, j])
        if ok.sum():
            y = lab[ok, j]
            out[c] = dict(coverage=float(np.mean((y >= lo[ok, j] - 1e-6) & (y <= hi[ok, j] + 1e-6))),
                          width=float(np.mean(hi[ok, j] - lo[ok, j])))
    return out


def triage(conf_dev, right_dev, conf_val, right_val, target=0.99):
    from gzmorph.evaluation.evaluate import triage_cut

    thr = triage_cut(conf_dev, right_dev, target)[0]["threshold"]
    keep = conf_val >= thr
    return dict(threshold=float(thr), kept=float(keep.mean()),
                accuracy_kept=float(right_val[keep].mean()) if keep.any() else float("nan"))


def reached_right(pred, lab, sl):
    from gzmorph.inference.calibrator import conditional

    use = np.isfinite(lab[:, sl]).all(1) & (lab[:, sl].sum(1) >= 0.5 - 1e-6)
    cond = conditional(pred, sl)
    return use, cond.argmax(1) == np.nan_to_num(lab[:, sl], nan=-1).argmax(1)


def scaled_views(views_dev, lab_dev, views_val, tree):
    """Mean +- s * sd over views, ``s`` per answer fitted on the calibration split to cover LEVEL."""
    mean_d, sd_d = views_dev.mean(0), views_dev.std(0) + 1e-4
    mean_v, sd_v = views_val.mean(0), views_val.std(0) + 1e-4
    lo, hi = np.full(mean_v.shape, np.nan), np.full(mean_v.shape, np.nan)
    for j in range(tree.n_answers):
        ok = np.isfinite(lab_dev[:, j])
        if not ok.any():
            continue
        z = np.abs(lab_dev[ok, j] - mean_d[ok, j]) / sd_d[ok, j]
        s = float(np.quantile(z, LEVEL))
        lo[:, j], hi[:, j] = np.clip(mean_v[:, j] - s * sd_v[:, j], 0, 1), np.clip(mean_v[:, j] + s * sd_v[:, j], 0, 1)
    return lo, hi


def evaluate_run(run, which, dev_cat, val_cat, tree):
    """Every number of one run: before/after calibration on the reported split."""
    from gzmorph.evaluation.calibrate import fit_calibration
    from gzmorph.metrics import masked_rmse
    from gzmorph.inference.calibrator import dirichlet_interval
    from gzmorph.tree import agreement

    t0 = time.time()
    saved = REUSE / f"views_{Path(run).name}.npz" if REUSE else None
    if saved is not None and saved.is_file():  # the predictions of an earlier run of this script
        d = np.load(saved)
        views_dev, views_val = d["dev"], d["val"]
        alpha_dev, alpha_val = (d["alpha_dev"], d["alpha_val"]) if d["alpha_val"].size else (None, None)
    else:
        views_dev, alpha_dev = per_view(run, dev_cat, which)
        views_val, alpha_val = per_view(run, val_cat, which)
    seconds = time.time() - t0
    np.savez_compressed(OUT / f"views_{Path(run).name}.npz", dev=views_dev, val=views_val,
                        alpha_dev=alpha_dev if alpha_dev is not None else np.zeros(0),
                        alpha_val=alpha_val if alpha_val is not None else np.zeros(0))
    raw_dev, raw_val = views_dev.mean(0), views_val.mean(0)
    lab_dev, lab_val = dev_cat.labels.astype(np.float64), val_cat.labels.astype(np.float64)
    cal = fit_calibration(raw_dev, lab_dev, tree, votes=dev_cat.votes, level=LEVEL, source="dev")
    cal_val, cal_dev = cal.fractions(raw_val, tree), cal.fractions(raw_dev, tree)
    pc_val, pc_dev = cal.probability_correct(cal_val, tree), cal.probability_correct(cal_dev, tree)
    res = {"run": run, "which": which, "predict_seconds": seconds,
           "rmse_before": float(masked_rmse(raw_val, lab_val)), "rmse_after": float(masked_rmse(cal_val, lab_val)),
           "temperature": cal.temperature, "votes": cal.votes, "questions": {}}
    intervals = {"views": (np.quantile(views_val, 0.1, axis=0), np.quantile(views_val, 0.9, axis=0)),
                 "views-scaled": scaled_views(views_dev, lab_dev, views_val, tree),
                 "calibrated": cal.intervals(cal_val, tree, LEVEL)}
    if alpha_val is not None:
        votes = (val_cat.votes[:, tree.slices[0]].sum(1) if val_cat.votes is not None
                 else np.full(len(alpha_val), cal.votes))
        intervals["dirichlet"] = dirichlet_interval(alpha_val, votes.astype(int), tree, LEVEL)
    res["coverage"] = {name: coverage(lab_val, lo, hi, tree) for name, (lo, hi) in intervals.items()}
    for q, sl in zip(tree.questions, tree.slices):
        if q.name not in SCORED or not np.isfinite(lab_val[:, sl]).all(1).any():
            continue
        use_d, right_d = reached_right(raw_dev, lab_dev, sl)
        use_v, right_v = reached_right(raw_val, lab_val, sl)
        a_dev, a_val = np.nan_to_num(agreement(raw_dev[:, sl])), np.nan_to_num(agreement(raw_val[:, sl]))
        res["questions"][q.name] = {
            "ece_before": ece_top(raw_val, lab_val, sl), "ece_after": ece_top(cal_val, lab_val, sl, pc_val[q.name]),
            # today's thresholds: the confidence a fitted on the reported galaxies themselves
            "triage_today_in_sample": triage(a_val[use_v], right_v[use_v], a_val[use_v], right_v[use_v]),
            "triage_a_fitted_on_dev": triage(a_dev[use_d], right_d[use_d], a_val[use_v], right_v[use_v]),
            "triage_calibrated": triage(pc_dev[q.name][use_d], right_d[use_d], pc_val[q.name][use_v],
                                        right_v[use_v]),
            "rmse_before": float(masked_rmse(raw_val[:, sl], lab_val[:, sl])),
            "rmse_after": float(masked_rmse(cal_val[:, sl], lab_val[:, sl])),
        }
    return res


def summary(res) -> str:
    lines = [f"## {res['run']} ({res['which']})",
             f"RMSE (labelled columns) before {res['rmse_before']:.4f}, after {res['rmse_after']:.4f}; votes {res['votes']}",
             "| question | ECE before (95% CI) | ECE after (95% CI) | acc | triage today (in-sample) kept/acc | "
             "a on dev kept/acc | calibrated kept/acc |", "|---|---|---|---|---|---|---|"]
    for q, r in res["questions"].items():
        b, a = r["ece_before"], r["ece_after"]
        t0, t1, t2 = r["triage_today_in_sample"], r["triage_a_fitted_on_dev"], r["triage_calibrated"]
        lines.append(f"| {q} | {b['ece']:.3f} ({b['ece_lo']:.3f}-{b['ece_hi']:.3f}) | {a['ece']:.3f} "
                     f"({a['ece_lo']:.3f}-{a['ece_hi']:.3f}) | {b['accuracy']:.3f} (n {b['n']}) | "
                     f"{t0['kept']:.3f}/{t0['accuracy_kept']:.3f} | {t1['kept']:.3f}/{t1['accuracy_kept']:.3f} | "
                     f"{t2['kept']:.3f}/{t2['accuracy_kept']:.3f} |")
    lines += ["", "| interval source | coverage min | mean | max | answers in 75-85% | mean width |", "|---|---|---|---|---|---|"]
    for name, cov in res["coverage"].items():
        c = np.array([v["coverage"] for v in cov.values()])
        w = np.array([v["width"] for v in cov.values()])
        lines.append(f"| {name} | {c.min():.3f} | {c.mean():.3f} | {c.max():.3f} | "
                     f"{int(((c >= 0.75) & (c <= 0.85)).sum())}/{len(c)} | {w.mean():.3f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    r = sub.add_parser("real")
    r.add_argument("--run", required=True)
    r.add_argument("--which", default="best")
    r.add_argument("--dev", required=True)
    r.add_argument("--val", required=True)
    m = sub.add_parser("mock")
    m.add_argument("--data", required=True, help="mock dataset (Kaggle layout, with test labels)")
    m.add_argument("--runs", nargs="+", required=True, help="NAME=RUN_DIR")
    m.add_argument("--val-fraction", type=float, default=1 / 7, help="the runs' held-out (calibration) fraction")
    for s in (r, m):
        s.add_argument("--reuse", type=Path, default=None, help="folder of an earlier run: reuse its predictions")
        s.add_argument("--out", type=Path, required=True)
        s.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    global OUT, REUSE
    OUT, REUSE = args.out, args.reuse

    from gzmorph.data.catalog import open_catalog, train_val_split
    from gzmorph.tree import GZ2

    args.out.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    if args.what == "real":
        dev, val = open_catalog(args.dev), open_catalog(args.val)
        results = [evaluate_run(args.run, args.which, dev, val, GZ2)]
    else:
        from gzmorph.data.tables import read_catalog_table
        from gzmorph.data.catalog import Catalog
        from gzmorph.data.votes import read_votes

        full = open_catalog(args.data)
        _, dev = train_val_split(full, args.val_fraction, None)
        test_file = Path(args.data) / "test_solutions_rev1.csv"
        ids, _, labels = read_catalog_table(test_file, GZ2, "GalaxyID", None)
        paths = np.array([str(Path(args.data) / "images_test_rev1" / f"{i}.jpg") for i in ids], dtype=object)
        val = Catalog(ids, paths, labels, GZ2, "GalaxyID", str(test_file), read_votes(test_file, GZ2, labels, "GalaxyID"))
        results = []
        for spec in args.runs:
            name, run = spec.split("=", 1)
            res = evaluate_run(run, "best", dev, val, GZ2)
            res["name"] = name
            results.append(res)
    stamp = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_1min_start": load,
             "load_1min_end": os.getloadavg()[0]}
    (args.out / "results.json").write_text(json.dumps({"stamp": stamp, "results": results}, indent=1))
    text = "\n\n".join(summary(r) for r in results)
    (args.out / "summary.md").write_text(text + "\n")
    print(stamp)
    print(text)


if __name__ == "__main__":
    main()
