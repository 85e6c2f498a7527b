"""``gzmorph train``: train a network on a labelled catalog."""

from __future__ import annotations

import argparse

HELP = "train a network on labelled images (Kaggle dir, catalog or cache)"


OVERRIDES = ("examples", "batch_size", "lr", "eval_every", "image_size", "val_fraction", "split_seed", "seed",
             "tree", "compile", "precision", "ema_decay", "init_from", "loss", "assumed_votes")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from gzmorph.options import add_config_options
    from gzmorph.models.trainconfig import TrainConfig
    from gzmorph.training.recipes import PRESETS

    p.add_argument("--data", required=True, help="Kaggle directory, CSV/Parquet catalog, or cache from `gzmorph prepare`")
    p.add_argument("--id-column", default="GalaxyID", help="id column of a CSV/Parquet catalog")
    p.add_argument("--path-column", default="path", help="image path column of a CSV/Parquet catalog")
    p.add_argument("--out", required=True, help="run directory to write (config, metrics, checkpoints)")
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="model + training recipe (default: paper, or with --init-from that run's configuration)")
    # TrainConfig documents only some fields in comments: the rest of the help is here.
    add_config_options(p, TrainConfig, fields=OVERRIDES, keep_defaults="the preset's", help={
        "examples": "training examples (lr milestones scale with it)",
        "batch_size": "examples per optimizer step",
        "lr": "learning rate",
        "image_size": "side of the decoded images in pixels",
        "val_fraction": "held-out fraction (the last by id unless --split-seed)",
        "seed": "random seed"})
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--gpus", type=int, default=1, help="train on K GPUs of this machine with DistributedDataParallel (with --device cpu: K gloo processes)")
    p.add_argument("--workers", type=int, help="JPEG decoding processes (default: all cores)")
    p.add_argument("--max-minutes", type=float, help="stop cleanly (checkpoint written) after this wall time")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--new-data", action="store_true",
                   help="with --resume: continue on data other than the run's (recorded in config.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--recentre", action=argparse.BooleanOptionalAction, default=None,
                   help="recentre and rescale every image on its galaxy found by source extraction (the paper's "
                        "section 7.3; pip install 'gzmorph[survey]'); recorded in the run, so predict applies it "
                        "(default: the preset's, on for paper-recentred)")
    from gzmorph.commands.predict import add_survey_options

    add_survey_options(p)


def _init_config(init_from: str):
    """The configuration of the model fine-tuning starts from (run directory, package or Hub model)."""
    from gzmorph.models.resolve import model_kind, resolve_model
    from gzmorph.models.hub import parse_ref
    from gzmorph.models.rundir import run_config
    from pathlib import Path

    if parse_ref(init_from) is None and model_kind(Path(init_from)) == "run":
        return run_config(init_from)  # no need to load the weights twice
    return resolve_model(init_from, "best", device="cpu", purpose="fine-tuned").config


def run(args: argparse.Namespace) -> int:
    from gzmorph.config import build
    from gzmorph.options import config_values
    from gzmorph.models.trainconfig import TrainConfig
    from gzmorph.training.recipes import get_preset
    from gzmorph.training.train import train

    overrides = config_values(args, TrainConfig, fields=OVERRIDES, drop_none=True)
    # With --init-from and no --preset, fine-tuning continues that run's configuration.
    base = _init_config(args.init_from) if args.init_from and not args.preset else get_preset(args.preset or "paper")
    from gzmorph.commands.predict import survey_stretch

    cfg = build(TrainConfig, {**base.to_dict(), **overrides})
    if args.recentre is not None:
        cfg = build(TrainConfig, {**cfg.to_dict(), "augment": {**cfg.augment.to_dict(), "recentre": args.recentre}})
    result = train(cfg, args.data, args.out, device=args.device, resume=args.resume, workers=args.workers,
                   max_minutes=args.max_minutes, progress=not args.no_progress, processes=args.gpus,
                   id_column=args.id_column, path_column=args.path_column,
                   new_data=args.new_data, stretch=survey_stretch(args))
    state = "finished" if result["finished"] else "stopped (resume with --resume)"
    print(f"{state} after {result['examples']:,} examples in {result['seconds']:.0f}s: "
          f"best validation RMSE {result['best_val_rmse']:.4f} -> {args.out}")
    return 0
