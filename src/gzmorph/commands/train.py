"""``gzmorph train``: train a network on a labelled catalog."""

from __future__ import annotations

import argparse

HELP = "train a network on labelled images (Kaggle dir, catalog or cache)"


OVERRIDES = ("examples", "batch_size", "lr", "eval_every", "image_size", "val_fraction", "split_seed", "seed",
             "tree", "compile", "precision", "ema_decay", "init_from", "loss", "assumed_votes",
             "pixel_scale", "pixel_scale_side")
# Fine-tuning (gzmorph.training.finetune): with --init-from.
OVERRIDES += ("freeze_stages", "head_only", "lr_layer_decay")
# Survey-robust augmentation strengths (gzmorph.nn.survey_augment), options --augment-NAME.
SURVEY_AUGMENT = ("psf_blur", "noise", "degrade", "color_jitter", "stretch_jitter", "survey_prob")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from gzmorph.options import add_config_options, add_data_options
    from gzmorph.models.trainconfig import TrainConfig
    from gzmorph.training.recipes import PRESETS, RENAMED_PRESETS

    p.add_argument("--data", required=True, help="Kaggle directory, CSV/Parquet catalog, or cache from `gzmorph prepare`")
    add_data_options(p, ("id_column", "path_column"))
    p.add_argument("--out", required=True, help="run directory to write (config, metrics, checkpoints)")
    p.add_argument("--preset", choices=sorted(PRESETS) + sorted(RENAMED_PRESETS),  # old names warn
                   help="model + training recipe (default: paper, or with --init-from that run's configuration)")
    add_config_options(p, TrainConfig, fields=OVERRIDES, keep_defaults="the preset's")
    from gzmorph.nn.augment import AugmentConfig

    g = p.add_argument_group("survey-robust augmentation (README: \"Using gzmorph on another survey\")")
    add_config_options(g, AugmentConfig, fields=SURVEY_AUGMENT, prefix="augment-", keep_defaults="the preset's")
    add_data_options(p, ("device",))
    p.add_argument("--gpus", type=int, default=1, help="train on K GPUs of this machine with DistributedDataParallel (with --device cpu: K gloo processes)")
    add_data_options(p, ("workers",))
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


def _resume_config(out: str):
    """The stored configuration of the run to resume (train refuses a folder without one)."""
    from gzmorph.errors import RunError
    from gzmorph.training.recipes import get_preset
    from gzmorph.models.rundir import run_config

    try:
        return run_config(out)
    except RunError:
        return get_preset("paper")  # nothing to resume: train() says so


def run(args: argparse.Namespace) -> int:
    from gzmorph.config import build
    from gzmorph.models.trainconfig import TrainConfig
    from gzmorph.nn.augment import AugmentConfig
    from gzmorph.options import config_values, data_options
    from gzmorph.training.options import RunOptions
    from gzmorph.training.recipes import get_preset
    from gzmorph.training.train import train

    overrides = config_values(args, TrainConfig, fields=OVERRIDES, drop_none=True)
    # With --init-from and no --preset, fine-tuning continues that run's configuration;
    # --resume without --preset continues the run's own (only the values given here are new).
    if args.resume and not args.preset:
        base = _resume_config(args.out)
    elif args.init_from and not args.preset:
        base = _init_config(args.init_from)
    else:
        base = get_preset(args.preset or "paper")
    from gzmorph.commands.predict import survey_stretch

    cfg = build(TrainConfig, {**base.to_dict(), **overrides})
    augment = config_values(args, AugmentConfig, fields=SURVEY_AUGMENT, prefix="augment-", drop_none=True)
    if args.recentre is not None:
        augment["recentre"] = args.recentre
    if augment:
        cfg = build(TrainConfig, {**cfg.to_dict(), "augment": {**cfg.augment.to_dict(), **augment}})
    data = data_options(args)
    options = build(RunOptions, {"device": data.device, "resume": args.resume, "workers": data.workers,
                                 "max_minutes": args.max_minutes, "progress": not args.no_progress,
                                 "processes": args.gpus, "id_column": data.id_column,
                                 "path_column": data.path_column, "new_data": args.new_data,
                                 "stretch": survey_stretch(args)})
    result = train(cfg, args.data, args.out, options)
    state = "finished" if result["finished"] else "stopped (resume with --resume)"
    print(f"{state} after {result['examples']:,} examples in {result['seconds']:.0f}s: "
          f"best validation RMSE {result['best_val_rmse']:.4f} -> {args.out}")
    return 0
