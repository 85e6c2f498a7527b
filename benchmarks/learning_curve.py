"""RMSE17 on the shared benchmark split against training wall-clock: learning curves on 2 CPU cores.

One run per preset, its schedule sized by ``--examples``.  Training stops cleanly at
each time point (``train(max_minutes=...)``), the validation split is scored with
each ``--tta`` level from ``last.pt`` (which holds the averaged weights, if any), and
the run resumes exactly where it stopped, so the scoring does not count as training
time.  A point reached after the schedule has finished is the finished run.

Benchmark convention (``../shared/data/README.md``): sort by GalaxyID, train on the
first 4,500, validate on the last 500, RMSE over the 17 available columns.

Usage::

    python benchmarks/learning_curve.py --preset p4m --examples 1500000 --points 5 10 20 30 60
    python benchmarks/learning_curve.py --preset small --examples 600000 --points 5 10 20 30 60
    python benchmarks/learning_curve.py --plot runs/curves --png docs/learning_curves.png

Each point is one JSON line in ``OUT/<preset>-<examples>/curve.jsonl`` (with the load
average of the machine while it trained); ``--plot`` draws every curve under a folder.

Seeds (issue 20: every headline number is the mean and standard deviation of three):
``--seeds 0 1 2`` trains one run per seed (``OUT/<name>-seed<k>/``, one after the
other) and writes ``OUT/<name>-seeds.json``: per time point, each TTA level's mean,
standard deviation (n - 1) and values over the seeds.  ``--plot`` draws seed groups as
their mean with the standard deviation as error bars.

Protocol (BENCHMARKS.md, "Protocol"): explore with ``--data runs/splits/train4500.csv
--val-fraction 0.1111111`` (train on the first 4,000, score the development split);
report the chosen design on the shared folder (the validation split) once.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

import numpy as np

PAPER_RMSE17 = 0.0891  # the paper network on this benchmark (2M examples on an H100, BENCHMARKS.md)
MEAN_RMSE17 = 0.1759  # predicting the training mean for every galaxy
DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "gz2-kaggle-5k-141px"


def rmse17(pred: np.ndarray, labels: np.ndarray) -> float:
    mask = ~np.isnan(labels)
    return float(np.sqrt(np.mean((pred[mask] - labels[mask]) ** 2)))


def score(run: Path, val, tta: str, device: str) -> float:
    from gzmorph.inference.predict import predict

    df = predict([run], val, tta=tta, device=device, progress=False, which="last")
    order = {k: i for i, k in enumerate(df[val.id_column].tolist())}
    pred = df[val.tree.columns].to_numpy(dtype=np.float64)[[order[k] for k in val.ids.tolist()]]
    return rmse17(pred, val.labels)


def seed_summary(curves: dict[int, list[dict]]) -> list[dict]:
    """Per time point reached by every seed: mean, sd (n - 1) and values of each ``rmse17_*``."""
    common = sorted(set.intersection(*({r["minutes"] for r in rows} for rows in curves.values())))
    out = []
    for minutes in common:
        rows = [next(r for r in curves[s] if r["minutes"] == minutes) for s in sorted(curves)]
        record = {"minutes": minutes, "seeds": sorted(curves),
                  "examples_mean": float(np.mean([r["examples"] for r in rows]))}
        for key in sorted(k for k in rows[0] if k.startswith("rmse17_")):
            values = [r[key] for r in rows]
            sd = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
            record[key] = {"mean": round(float(np.mean(values)), 5), "sd": round(sd, 5), "values": values}
        out.append(record)
    return out


def curve(args: argparse.Namespace) -> None:
    """One learning curve per seed (``--seeds``), then their summary."""
    if not args.seeds:
        one_curve(args, None)
        return
    curves = {seed: one_curve(args, seed) for seed in args.seeds}
    summary = seed_summary(curves)
    path = args.out / f"{base_name(args)}-seeds.json"
    path.write_text(json.dumps(summary, indent=1) + "\n")
    for r in summary:
        print(f"{r['minutes']:g} min: " + ", ".join(f"{k} {v['mean']:.4f} ± {v['sd']:.4f}" for k, v in r.items()
                                                   if k.startswith("rmse17_")) + f" (seeds {r['seeds']})")
    print(f"wrote {path}")


def base_name(args: argparse.Namespace) -> str:
    """The run folder name without the seed: ``--name`` or ``PRESET-EXAMPLES``."""
    from gzmorph.training.recipes import get_preset

    return args.name or f"{args.preset}-{args.examples or get_preset(args.preset).examples}"


def one_curve(args: argparse.Namespace, seed: int | None) -> list[dict]:
    from gzmorph.data.catalog import open_catalog, train_val_split
    from gzmorph.models.trainconfig import TrainConfig
    from gzmorph.training.recipes import get_preset
    from gzmorph.training.train import train

    cfg = get_preset(args.preset).override(examples=args.examples, eval_every=args.eval_every,
                                           precision=args.precision, compile=args.compile, seed=seed,
                                           val_fraction=args.val_fraction)
    if args.override:  # design exploration: '{"model": {"channels": [6, 12, 24, 48]}, "lr": 0.004}'
        d = cfg.to_dict()
        for key, value in json.loads(args.override).items():
            d[key] = {**d[key], **value} if isinstance(value, dict) else value
        cfg = TrainConfig.from_dict(d)
    run = args.out / (base_name(args) + ("" if seed is None else f"-seed{seed}"))
    _, val = train_val_split(open_catalog(args.data), cfg.val_fraction)
    log = run / "curve.jsonl"
    done = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    spent = done[-1]["train_seconds"] if done else 0.0
    for minutes in args.points:
        if any(r["minutes"] == minutes for r in done):
            continue
        t0, load0 = time.monotonic(), os.getloadavg()[0]
        result = train(cfg, args.data, run, device=args.device, resume=(run / "checkpoints" / "last.pt").exists(),
                       max_minutes=max(0.05, minutes - spent / 60), progress=False)
        spent += result["seconds"]
        record = {"preset": args.preset, "seed": cfg.seed, "minutes": minutes, "train_seconds": round(spent, 1),
                  "examples": result["examples"], "finished": result["finished"],
                  "wall_with_setup_s": round(time.monotonic() - t0, 1),
                  "load_avg_1min": [round(load0, 2), round(os.getloadavg()[0], 2)]}
        for tta in args.tta:
            record[f"rmse17_{tta}"] = round(score(run, val, tta, args.device), 5)
        done.append(record)
        with open(log, "a") as f:
            f.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)
        if result["finished"]:
            break
    return done


def plot(folder: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Wall-clock (the question asked) and examples (the same curves without the machine's load).
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    groups: dict[str, dict[str, list[dict]]] = {}  # runs of one design with several seeds share a group
    for log in sorted(folder.glob("*/curve.jsonl")):
        name = re.sub(r"-seed\d+$", "", log.parent.name)
        groups.setdefault(name, {})[log.parent.name] = [json.loads(x) for x in log.read_text().splitlines()]
    ys: list[float] = [PAPER_RMSE17]
    for name, runs in groups.items():
        rows = list(runs.values())[0] if len(runs) == 1 else seed_summary(dict(enumerate(runs.values())))
        if len(runs) > 1:
            for r in rows:  # the seeds' mean time of each point
                r["train_seconds"] = np.mean([next(x for x in v if x["minutes"] == r["minutes"])["train_seconds"]
                                              for v in runs.values()])
                r["examples"] = r["examples_mean"]
        t = [r["train_seconds"] / 60 for r in rows]
        n = [r["examples"] for r in rows]
        for tta, style in (("none", "-o"), ("rot", "--s")):
            if f"rmse17_{tta}" in rows[0]:
                label = f"{name} ({tta}" + (f", mean ± sd of {len(runs)} seeds)" if len(runs) > 1 else ")")
                y = [r[f"rmse17_{tta}"]["mean"] if len(runs) > 1 else r[f"rmse17_{tta}"] for r in rows]
                err = [r[f"rmse17_{tta}"]["sd"] for r in rows] if len(runs) > 1 else None
                ys += [v + sign * e for v, e in zip(y, err or [0.0] * len(y)) for sign in (-1, 1)]
                ax.errorbar(t, y, yerr=err, fmt=style, label=label, ms=4, capsize=2)
                bx.errorbar(n, y, yerr=err, fmt=style, label=label, ms=4, capsize=2)
    for a in (ax, bx):
        a.axhline(PAPER_RMSE17, color="k", lw=0.8, ls=":",
                  label=f"paper network, 2M examples on an H100 ({PAPER_RMSE17})")
        if max(ys) > 0.15:  # only when a curve starts near it: otherwise it flattens the curves' spread
            a.axhline(MEAN_RMSE17, color="grey", lw=0.8, ls=":", label=f"training mean ({MEAN_RMSE17})")
        a.grid(alpha=0.3)
    ax.set_ylim(min(ys) - 0.002, max(ys) + 0.002)
    ax.set(xlabel="training wall-clock on 2 CPU cores (minutes)", ylabel="RMSE17, 500 validation galaxies",
           xscale="log", title="Learning curves on the shared 5k benchmark")
    ax.set_xticks([5, 10, 20, 30, 60], ["5", "10", "20", "30", "60"])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    bx.set(xlabel="training examples", xscale="log", title="the same points against examples seen")
    bx.legend(fontsize=7)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    print(f"wrote {png}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--preset", default="p4m")
    p.add_argument("--name", help="run folder name (default PRESET-EXAMPLES)")
    p.add_argument("--examples", type=int, help="schedule length (default: the preset's)")
    p.add_argument("--points", type=float, nargs="+", default=[5, 10, 20, 30, 60], help="minutes of training")
    p.add_argument("--eval-every", type=int, help="examples between validations (default: the preset's)")
    p.add_argument("--precision", choices=["auto", "fast", "fp32", "bf16"])
    p.add_argument("--compile", choices=["off", "cuda", "always"])
    p.add_argument("--override", help="JSON of config changes (nested for model/augment) for design exploration")
    p.add_argument("--tta", nargs="+", default=["none", "rot"])
    p.add_argument("--seeds", type=int, nargs="+", help="one run per seed, then mean ± sd per time point")
    p.add_argument("--val-fraction", type=float,
                   help="held-out fraction, last by id (1/9 of train4500.csv is the development split)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=Path("runs/curves"))
    p.add_argument("--plot", type=Path, help="draw the curves of every run under this folder instead")
    p.add_argument("--png", type=Path, default=Path("docs/learning_curves.png"))
    args = p.parse_args()
    if args.plot:
        plot(args.plot, args.png)
    else:
        curve(args)


if __name__ == "__main__":
    main()
