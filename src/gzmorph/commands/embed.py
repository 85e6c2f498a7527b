"""``gzmorph embed``: the network's invariant representation of every image, to Parquet."""

from __future__ import annotations

import argparse

HELP = "embed a collection: the network's pooled (for p4m: rotation/flip-invariant) features, to Parquet"
DESCRIPTION = (
    "Write the pooled features before the network's head for every image of a folder, catalog or cache "
    "to OUT.parquet (id, path, embedding), through the same job as predict: failed images go to "
    "<OUT>.errors.csv, a killed job restarted with --resume writes the same file. For p4m/cyclic runs the "
    "features are pooled over the 8 turns/flips (exactly invariant to them); for the paper's network "
    "they are the 16 viewpoints' features concatenated. --pca-dim K reduces them with a PCA fitted once "
    "(stored as <OUT>.pca.npz; pip install 'gzmorph[discovery]'). The model digest is in the file's metadata."
)

EMBED_FIELDS = ("tta", "batch_size", "device", "precision", "workers", "threads", "chunk_rows", "which", "split",
                "id_column", "path_column")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from gzmorph.commands.predict import add_ray_options, add_survey_options
    from gzmorph.inference.config import PredictConfig
    from gzmorph.options import add_config_options

    p.add_argument("--model", required=True, help="a run directory or model package (not an .onnx file)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", metavar="DIR", help="folder of images (ids = file names without suffix)")
    src.add_argument("--catalog", metavar="FILE", help="CSV/Parquet catalog, cutouts folder or Kaggle directory")
    src.add_argument("--cache", metavar="CACHE", help="cache written by `gzmorph prepare`")
    p.add_argument("--out", required=True, metavar="FILE.parquet", help="the embedding file")
    pca = p.add_mutually_exclusive_group()
    pca.add_argument("--pca-dim", type=int, metavar="K", help="reduce to K dimensions (PCA fitted once)")
    pca.add_argument("--pca", metavar="FILE.npz", help="use the PCA stored by another embed (<OUT>.pca.npz)")
    p.add_argument("--pca-fit-rows", type=int, default=20000, metavar="N", help="images the PCA is fitted on")
    add_config_options(p, PredictConfig, fields=EMBED_FIELDS)
    add_survey_options(p)
    p.add_argument("--resume", action="store_true", help="continue an interrupted job writing the same --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_ray_options(p, "compute the chunks on Ray actors: the cluster at ADDRESS, or without ADDRESS "
                       "RAY_ADDRESS / a cluster started here / a new local one; this process fits the PCA and "
                       "writes the same OUT.parquet as without --ray")


def run(args: argparse.Namespace) -> int:
    from gzmorph.commands.predict import ray_config, survey_stretch
    from gzmorph.config import build
    from gzmorph.discovery.embed import embed_to_file
    from gzmorph.inference.config import PredictConfig
    from gzmorph.options import config_values

    values = config_values(args, PredictConfig, fields=EMBED_FIELDS)
    cfg = build(PredictConfig, {**values, "progress": not args.no_progress, "stretch": survey_stretch(args)})
    rcfg = ray_config(args) if args.ray is not None else None
    summary = embed_to_file(args.model, args.images or args.catalog or args.cache, args.out, config=cfg,
                            pca_dim=args.pca_dim, pca=args.pca, pca_fit_rows=args.pca_fit_rows, resume=args.resume,
                            ray_config=rcfg)
    print(summary.message().replace(" predicted ", " embedded "))
    return 0 if summary.n_predicted else 1
