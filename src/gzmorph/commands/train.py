"""``gzmorph train``: train a network on a labelled catalog."""

from __future__ import annotations

import argparse

HELP = "train a network on labelled images (Kaggle dir, catalog or cache)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from gzmorph.training.recipes import PRESETS

    p.add_argument("--data", required=True, help="Kaggle directory, CSV/Parquet catalog, or cache from `gzmorph prepare`")
    p.add_argument("--id-column", default="GalaxyID", help="id column of a CSV/Parquet catalog")
    p.add_argument("--path-column", default="path", help="image path column of a CSV/Parquet catalog")
    p.add_argument("--out", required=True, help="run directory to write (config, metrics, checkpoints)")
    p.add_argument("--preset", default="paper", choices=sorted(PRESETS), help="model + training recipe")
    p.add_argument("--examples", type=int, help="training examples (lr milestones scale with it)")
    p.add_argument("--batch-size", type=int, help="override the preset's batch size")
    p.add_argument("--lr", type=float, help="override the preset's learning rate")
    p.add_argument("--eval-every", type=int, help="examples between validations / checkpoints")
    p.add_argument("--image-size", type=int, help="side of the decoded images (default: preset's, 141)")
    p.add_argument("--val-fraction", type=float, help="held-out fraction (default 0.1: last 10%% by id)")
    p.add_argument("--split-seed", type=int, help="random held-out fraction with this seed instead of the last by id")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--tree", help="decision tree: 'gz2' or a JSON file")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the model (CUDA only)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--gpus", type=int, default=1, help="train on K GPUs of this machine with DistributedDataParallel (with --device cpu: K gloo processes)")
    p.add_argument("--workers", type=int, help="JPEG decoding processes (default: all cores)")
    p.add_argument("--max-minutes", type=float, help="stop cleanly (checkpoint written) after this wall time")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from gzmorph.config import build
    from gzmorph.training.recipes import TrainConfig, get_preset
    from gzmorph.training.train import train

    overrides = dict(examples=args.examples, batch_size=args.batch_size, lr=args.lr, eval_every=args.eval_every,
                     image_size=args.image_size, val_fraction=args.val_fraction, split_seed=args.split_seed,
                     seed=args.seed, tree=args.tree, compile=args.compile)
    preset = get_preset(args.preset).to_dict()
    cfg = build(TrainConfig, {**preset, **{k: v for k, v in overrides.items() if v is not None}})
    result = train(cfg, args.data, args.out, device=args.device, resume=args.resume, workers=args.workers,
                   max_minutes=args.max_minutes, progress=not args.no_progress, processes=args.gpus,
                   id_column=args.id_column, path_column=args.path_column)
    state = "finished" if result["finished"] else "stopped (resume with --resume)"
    print(f"{state} after {result['examples']:,} examples in {result['seconds']:.0f}s: "
          f"best validation RMSE {result['best_val_rmse']:.4f} -> {args.out}")
    return 0
