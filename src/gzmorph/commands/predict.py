"""``gzmorph predict``: annotate a collection of images with a trained model (or ensemble)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from gzmorph.inference.predict import PredictConfig
    from gzmorph.inference.ray import RaySummary

HELP = "predict the answer probabilities of a collection (CSV submission or Parquet with triage)"
DESCRIPTION = (
    "Predict every image of a folder, catalog or cache with one or more trained runs (averaged), "
    "streaming the rows to OUT (.csv: the Kaggle submission columns; .parquet: plus per question "
    "the most likely answer, its confidence, the reach probability and whether an expert should "
    "look; .fits, .ecsv, .vot: the Parquet columns as an astropy table with units, descriptions and "
    "provenance). --keep-columns/--keep-all carry the catalog's own columns into every output. "
    "Images that cannot be decoded are listed in <OUT>.errors.csv and the job goes on. "
    "A killed job restarted with --resume continues where it stopped and writes the same file. "
    "With --ray the job runs on a Ray cluster (pip install 'gzmorph[ray]'): OUT becomes a directory "
    "of Parquet parts, the error rows go to <OUT>.errors/, and --resume likewise computes only "
    "the parts not written yet."
)


PREDICT_FIELDS = ("tta", "batch_size", "device", "precision", "workers", "compile", "threads", "chunk_rows",
                  "which", "split", "id_column", "path_column", "recentre", "calibration", "interval_level",
                  "pixel_scale", "adapt_bn", "adapt_bn_images")
RAY_FIELDS = ("actors", "gpus_per_actor", "cpus_per_actor")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from gzmorph.inference.predict import PredictConfig
    from gzmorph.options import add_config_options

    p.add_argument("--model", nargs="+", required=True, metavar="MODEL",
                   help="run directories written by `gzmorph train`, model packages or .onnx files from "
                        "`gzmorph export` (ONNX runs with onnxruntime), or hf:ORG/NAME[@REVISION]; several "
                        "are averaged")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--images", metavar="DIR", help="folder of images (ids = file names without suffix)")
    src.add_argument("--catalog", metavar="FILE",
                     help="CSV/Parquet catalog with id and path columns, a folder written by `gzmorph cutouts`, "
                          "or a Kaggle directory")
    src.add_argument("--cache", metavar="CACHE", help="cache written by `gzmorph prepare`")
    p.add_argument("--out", metavar="FILE",
                   help="output file: .csv, .parquet, or .fits/.ecsv/.vot (an astropy table with units, "
                        "descriptions and provenance)")
    keep = p.add_mutually_exclusive_group()
    keep.add_argument("--keep-columns", metavar="COLS",
                      help="columns of the --catalog to carry into every output after the id, e.g. ra,dec,z")
    keep.add_argument("--keep-all", action="store_true", help="carry every column of the --catalog")
    add_config_options(p, PredictConfig, fields=PREDICT_FIELDS)
    add_survey_options(p)
    p.add_argument("--triage-thresholds", metavar="FILE",
                   help="per-question confidence thresholds from `gzmorph evaluate` (default 0.5 each)")
    w = p.add_mutually_exclusive_group()
    w.add_argument("--weights", metavar="W.json", help="ensemble weights fitted earlier with --fit-weights")
    w.add_argument("--fit-weights", metavar="VAL_CATALOG",
                   help="fit ensemble weights on this labelled catalog (Kaggle dir, catalog or cache) first")
    p.add_argument("--weights-out", metavar="W.json", help="where --fit-weights stores the weights")
    p.add_argument("--resume", action="store_true", help="continue an interrupted job writing the same --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_ray_options(p, "run on Ray: the cluster at ADDRESS (HEAD_IP:6379, ray://HEAD_IP:10001, auto), or "
                       "without ADDRESS RAY_ADDRESS / a cluster started here / a new local one; --out is "
                       "a directory of Parquet parts, --chunk-rows rows each; --workers and --device are "
                       "not used (Ray tasks decode; actors use the GPUs Ray gives them)")


def add_ray_options(p: argparse.ArgumentParser, help_text: str) -> None:
    """``--ray [ADDRESS]`` and the actor resources (``--ray-actors``...); shared by predict and embed."""
    from gzmorph.inference.ray import RayConfig
    from gzmorph.options import add_config_options

    r = p.add_argument_group("Ray cluster (pip install 'gzmorph[ray]')")
    r.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS", help=help_text)
    add_config_options(r, RayConfig, fields=RAY_FIELDS, prefix="ray-")


def ray_config(args: argparse.Namespace) -> Any:
    """The :class:`~gzmorph.inference.ray.RayConfig` of ``--ray`` and its options (Ray itself is not imported)."""
    from gzmorph.config import build
    from gzmorph.inference.ray import RayConfig
    from gzmorph.options import config_values

    return build(RayConfig, {**config_values(args, RayConfig, fields=RAY_FIELDS, prefix="ray_"),
                             "address": args.ray or None})


def add_survey_options(p: argparse.ArgumentParser) -> None:
    """``--stretch``, ``--bands``... of FITS cutouts (pip install 'gzmorph[survey]'); shared by the commands."""
    from gzmorph.data.composite import SurveyOptions
    from gzmorph.options import add_config_options

    group = p.add_argument_group("FITS cutouts (pip install 'gzmorph[survey]')")
    add_config_options(group, SurveyOptions)


def survey_stretch(args: argparse.Namespace):
    """The :class:`~gzmorph.data.composite.Stretch` the survey options ask for, or None."""
    from gzmorph.config import build
    from gzmorph.data.composite import SurveyOptions
    from gzmorph.options import config_values

    return build(SurveyOptions, config_values(args, SurveyOptions)).resolve()


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
    from gzmorph.inference.ray import predict_ray

    return predict_ray(args.model, source, args.out, config=cfg, ray_config=ray_config(args), weights=weights,
                       triage_thresholds=args.triage_thresholds, resume=args.resume,
                       keep_columns=_kept(args), keep_all=args.keep_all)


def _kept(args: argparse.Namespace) -> list[str] | None:
    return [c.strip() for c in args.keep_columns.split(",") if c.strip()] if args.keep_columns else None


def run(args: argparse.Namespace) -> int:
    from gzmorph.config import build
    from gzmorph.errors import ConfigError
    from gzmorph.inference.predict import PredictConfig, fit_weights, predict_to_file
    from gzmorph.options import config_values

    problem = _check(args)
    if problem:
        raise ConfigError(problem)
    values = config_values(args, PredictConfig, fields=PREDICT_FIELDS)
    cfg = build(PredictConfig, {**values, "progress": not args.no_progress, "stretch": survey_stretch(args)})
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
                                  triage_thresholds=args.triage_thresholds, resume=args.resume,
                                  keep_columns=_kept(args), keep_all=args.keep_all)
    print(summary.message())
    if summary.n_inputs > summary.n_resumed:
        print(f"{summary.images_per_second:.1f} images/s")
    return 0 if summary.n_predicted else 1
