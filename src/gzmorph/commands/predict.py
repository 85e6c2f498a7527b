"""``gzmorph predict``: annotate a collection of images with a trained model (or ensemble)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from gzmorph.inference.predict import PredictConfig
    from gzmorph.inference.ray import RaySummary

HELP = "predict the answer probabilities of a collection (CSV submission or Parquet with triage)"
DESCRIPTION = (
    "Predict every image of a folder, catalog or cache with one or more trained runs (averaged), "
    "streaming the rows to OUT (.csv: the Kaggle submission columns; .parquet: plus per question "
    "the most likely answer, its confidence, the reach probability and whether an expert should "
    "look). Images that cannot be decoded are listed in <OUT stem>.errors.csv and the job goes on. "
    "A killed job restarted with --resume continues where it stopped and writes the same file. "
    "With --ray the job runs on a Ray cluster (pip install 'gzmorph[ray]'): OUT becomes a directory "
    "of Parquet parts, the error rows go to <OUT stem>.errors/, and --resume likewise computes only "
    "the parts not written yet."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", nargs="+", required=True, metavar="RUN_DIR",
                   help="run directories written by `gzmorph train`; several are averaged")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--images", metavar="DIR", help="folder of images (ids = file names without suffix)")
    src.add_argument("--catalog", metavar="FILE",
                     help="CSV/Parquet catalog with id and path columns, or a Kaggle directory")
    src.add_argument("--cache", metavar="CACHE", help="cache written by `gzmorph prepare`")
    p.add_argument("--out", metavar="FILE", help="output file, .csv or .parquet")
    p.add_argument("--tta", choices=["none", "rot", "paper"], default="none",
                   help="test-time averaging: one pass, 5 rotations, or the paper's 60 transforms")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="auto: bf16 autocast + channels_last on CUDA, fp32 on CPU; bf16: also on CPU")
    p.add_argument("--workers", type=int, default=None,
                   help="JPEG decoding processes (None: automatic, 0: in this process)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the networks (~10 s each up front; about 2x faster forward on a CPU)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (None: torch's default; 1 is often fastest on a busy CPU)")
    p.add_argument("--chunk-rows", type=int, default=2048, help="rows written per chunk (Parquet row group)")
    p.add_argument("--which", choices=["best", "last"], default="best", help="checkpoint of each run")
    p.add_argument("--split", choices=["train", "test"], default="train",
                   help="with a Kaggle directory as --catalog: its training or test images")
    p.add_argument("--id-column", default="GalaxyID", help="id column of a catalog file")
    p.add_argument("--path-column", default="path", help="image path column of a catalog file")
    p.add_argument("--triage-thresholds", metavar="FILE",
                   help="per-question confidence thresholds from `gzmorph evaluate` (default 0.5 each)")
    w = p.add_mutually_exclusive_group()
    w.add_argument("--weights", metavar="W.json", help="ensemble weights fitted earlier with --fit-weights")
    w.add_argument("--fit-weights", metavar="VAL_CATALOG",
                   help="fit ensemble weights on this labelled catalog (Kaggle dir, catalog or cache) first")
    p.add_argument("--weights-out", metavar="W.json", help="where --fit-weights stores the weights")
    p.add_argument("--resume", action="store_true", help="continue an interrupted job writing the same --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    r = p.add_argument_group("Ray cluster (pip install 'gzmorph[ray]')")
    r.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run on Ray: the cluster at ADDRESS (HEAD_IP:6379, ray://HEAD_IP:10001, auto), or "
                        "without ADDRESS RAY_ADDRESS / a cluster started here / a new local one; --out is "
                        "a directory of Parquet parts, --chunk-rows rows each; --workers and --device are "
                        "not used (Ray tasks decode; actors use the GPUs Ray gives them)")
    r.add_argument("--ray-actors", type=int, default=None, metavar="N",
                   help="model actors (None: one per GPU, or CPU actors using half the cluster's CPUs)")
    r.add_argument("--ray-gpus-per-actor", type=float, default=None, metavar="G",
                   help="GPUs per actor, fractions share a GPU; 0: CPU actors (None: 1 if the cluster "
                        "has GPUs, else 0)")
    r.add_argument("--ray-cpus-per-actor", type=float, default=1.0, metavar="C",
                   help="CPUs reserved per actor (CPU actors: also their torch threads unless --threads)")


def _check(p_args: argparse.Namespace) -> str | None:
    source = p_args.images or p_args.catalog or p_args.cache
    if p_args.weights_out and not p_args.fit_weights:
        return "--weights-out needs --fit-weights"
    if p_args.fit_weights and len(p_args.model) < 2:
        return "--fit-weights needs at least two --model runs"
    if p_args.fit_weights and not p_args.weights_out and not (source and p_args.out):
        return "--fit-weights needs --weights-out, or a source and --out to predict with the fitted weights"
    if not p_args.fit_weights and not (source and p_args.out):
        return "give one of --images, --catalog or --cache, and --out"
    if bool(source) != bool(p_args.out):
        return "give both a source (--images, --catalog or --cache) and --out, or neither (weights only)"
    return None


def _predict_on_ray(args: argparse.Namespace, source: str, cfg: PredictConfig,
                    weights: str | Sequence[float] | None) -> RaySummary:
    # Imported here: without --ray nothing imports Ray (an optional extra).
    from gzmorph.config import build
    from gzmorph.inference.ray import RayConfig, predict_ray

    rcfg = build(RayConfig, dict(address=args.ray or None, actors=args.ray_actors,
                                 gpus_per_actor=args.ray_gpus_per_actor, cpus_per_actor=args.ray_cpus_per_actor))
    return predict_ray(args.model, source, args.out, config=cfg, ray_config=rcfg, weights=weights,
                       triage_thresholds=args.triage_thresholds, resume=args.resume)


def run(args: argparse.Namespace) -> int:
    from gzmorph.config import build
    from gzmorph.errors import ConfigError
    from gzmorph.inference.predict import PredictConfig, fit_weights, predict_to_file

    problem = _check(args)
    if problem:
        raise ConfigError(problem)
    cfg = build(PredictConfig, dict(tta=args.tta, batch_size=args.batch_size, device=args.device,
                                    precision=args.precision, workers=args.workers, threads=args.threads,
                                    compile=args.compile, chunk_rows=args.chunk_rows, which=args.which,
                                    progress=not args.no_progress, split=args.split, id_column=args.id_column,
                                    path_column=args.path_column))
    weights = args.weights
    if args.fit_weights:
        record = fit_weights(args.model, args.fit_weights, args.weights_out, config=cfg)
        rmse = record["rmse"]
        print("ensemble weights " + ", ".join(f"{w:.3f}" for w in record["weights"])
              + f" on {record['n_images']} images: RMSE {rmse['fitted']:.4f} (uniform {rmse['uniform']:.4f}, "
              + "runs " + ", ".join(f"{r:.4f}" for r in rmse["runs"]) + ")"
              + (f" -> {args.weights_out}" if args.weights_out else ""))
        weights = record["weights"]
    source = args.images or args.catalog or args.cache
    if source is None:
        return 0
    if args.ray is not None:
        summary = _predict_on_ray(args, source, cfg, weights)
    else:
        summary = predict_to_file(args.model, source, args.out, config=cfg, weights=weights,
                                  triage_thresholds=args.triage_thresholds, resume=args.resume)
    print(summary.message())
    if summary.n_inputs > summary.n_resumed:
        print(f"{summary.images_per_second:.1f} images/s")
    return 0 if summary.n_predicted else 1
