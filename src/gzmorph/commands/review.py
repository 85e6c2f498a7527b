"""``gzmorph review``: experts answer the tree for the flagged galaxies; ``review export``: their labels."""

from __future__ import annotations

import argparse

HELP = "review the flagged galaxies in a browser (answers in SQLite); `review export` writes them as labels"
DESCRIPTION = (
    "Serve a web page where reviewers answer the decision tree, one question at a time, for the galaxies "
    "that PREDICTIONS flags (needs_expert), most doubtful first. Every answer is committed to the SQLite "
    "database DB at once. `gzmorph review export --db DB --out labels.csv` writes the vote fractions "
    "(Kaggle cumulative convention, NaN where nobody answered) with the image paths: a catalog for "
    "`gzmorph train --data` and `gzmorph evaluate --labels`."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from gzmorph.options import add_data_options

    p.add_argument("--predictions", metavar="FILE", help="prediction Parquet (or CSV) from `gzmorph predict`")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--images", metavar="DIR", help="folder of the predicted images (ids = file stems)")
    where.add_argument("--catalog", metavar="FILE", help="CSV/Parquet catalog or Kaggle directory of the images")
    p.add_argument("--split", default="test", choices=("train", "test"), help="split of a Kaggle directory")
    p.add_argument("--db", metavar="DB", help="review database (SQLite; created when missing)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind; any non-loopback address needs --token")
    p.add_argument("--port", type=int, default=8000, help="port to listen on")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="another host name browsers may use for this server (a proxy's name; repeatable); "
                        "requests naming any other host are refused")
    p.add_argument("--token", help="shared secret every request must carry (default: $GZMORPH_REVIEW_TOKEN)")
    p.add_argument("--show-model", action="store_true",
                   help="show the model's probabilities by default (reviewers can turn them off)")
    add_data_options(p, ("id_column", "tree"))
    a = p.add_argument_group("acquisition policy: which galaxies are queued, in which order")
    a.add_argument("--policy", default="today",
                   choices=("today", "uncertainty", "bald", "anomaly", "similar", "random"),
                   help="today: flagged galaxies by reach x (1 - confidence); uncertainty: the whole tree's "
                        "entropy; bald: disagreement of --members; anomaly: --anomaly-index's score; similar: "
                        "closest to --seed-galaxy in --embeddings; random")
    a.add_argument("--members", nargs="+", metavar="FILE", default=(),
                   help="bald: prediction files of the ensemble members (or TTA views), at least two")
    a.add_argument("--anomaly-index", metavar="INDEX", help="anomaly: an index of `gzmorph similar --build`")
    a.add_argument("--embeddings", metavar="EMB.parquet", help="similar: an embedding file of `gzmorph embed`")
    a.add_argument("--seed-galaxy", nargs="+", metavar="ID", default=(), help="similar: the seed galaxies")
    a.add_argument("--random-seed", type=int, default=0, help="random: the seed of the order")
    sub = p.add_subparsers(dest="review_action", metavar="ACTION")
    exp = sub.add_parser("export", help="write the answers as vote-fraction labels (a training catalog)")
    exp.add_argument("--db", dest="export_db", required=True, metavar="DB", help="review database")
    exp.add_argument("--out", required=True, metavar="FILE", help="labels file to write (.csv or .parquet)")
    exp.add_argument("--overwrite", action="store_true", help="replace an existing --out file")


def run(args: argparse.Namespace) -> int:
    if args.review_action == "export":
        from gzmorph.review.export import export_labels

        frame = export_labels(args.export_db, args.out, overwrite=args.overwrite)
        n_votes = frame["n_reviewers"].sum()
        print(f"{len(frame)} galaxies, {n_votes} reviews -> {args.out}")
        return 0
    from gzmorph.errors import ConfigError
    from gzmorph.options import data_options
    from gzmorph.review.app import serve
    from gzmorph.review.acquisition import AcquisitionConfig
    from gzmorph.review.server import ReviewConfig

    missing = [flag for flag, value in (("--predictions", args.predictions), ("--db", args.db),
                                        ("--images or --catalog", args.images or args.catalog)) if not value]
    if missing:
        raise ConfigError(f"missing {', '.join(missing)}")
    data = data_options(args)
    cfg = ReviewConfig(predictions=args.predictions, catalog=args.images or args.catalog, db=args.db,
                       host=args.host, port=args.port, token=args.token, show_model=args.show_model,
                       tree=data.tree, id_column=data.id_column, split=args.split,
                       acquisition=AcquisitionConfig(args.policy, tuple(args.members), args.anomaly_index,
                                                     args.embeddings, tuple(args.seed_galaxy), args.random_seed),
                       allowed_hosts=tuple(args.allow_host))
    serve(cfg)
    return 0
