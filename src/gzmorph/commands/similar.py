"""``gzmorph similar``: build a similarity index of an embedding file, query it, rank anomalies."""

from __future__ import annotations

import argparse

HELP = "similarity search and anomaly ranking over an embedding file (pip install 'gzmorph[discovery]')"
DESCRIPTION = (
    "With --build EMB.parquet, build the index directory INDEX (faiss; plus an anomaly score per galaxy). "
    "Then query it: --id ID... (galaxies of the index), --image FILE... (embedded with the index's model), "
    "or --queries EMB.parquet (vectors of another embedding file of the same model; --id picks rows of it). "
    "Writes the top -k neighbours with distances to --out (CSV/Parquet) and an HTML gallery of thumbnails "
    "to --gallery. --anomalies N lists the N most anomalous galaxies instead. No output replaces an input "
    "(the embedding file, its collection and images, the index) or an existing file or index without --overwrite."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from gzmorph.discovery.anomaly import ANOMALY_METHODS
    from gzmorph.discovery.index import INDEX_KINDS, METRICS

    p.add_argument("index", metavar="INDEX", help="the index directory")
    p.add_argument("--build", metavar="EMB.parquet", help="build INDEX from this embedding file (gzmorph embed)")
    p.add_argument("--metric", choices=METRICS, default="cosine", help="with --build: distance (default cosine)")
    p.add_argument("--kind", choices=INDEX_KINDS, default="flat", help="with --build: exact flat or HNSW graph")
    p.add_argument("--anomaly", choices=ANOMALY_METHODS, default="knn",
                   help="with --build: anomaly score (k-NN distance or isolation forest)")
    p.add_argument("--anomaly-k", type=int, default=10, help="neighbours of the k-NN anomaly score")
    q = p.add_mutually_exclusive_group()
    q.add_argument("--image", nargs="+", metavar="FILE", help="query with these image files")
    q.add_argument("--anomalies", type=int, metavar="N", help="the N most anomalous galaxies")
    p.add_argument("--id", nargs="+", metavar="ID", help="query galaxies (of the index, or of --queries)")
    p.add_argument("--queries", metavar="EMB.parquet", help="take query vectors from this embedding file")
    p.add_argument("-k", type=int, default=10, help="neighbours per query")
    p.add_argument("--out", metavar="FILE", help="results table (.csv or .parquet)")
    p.add_argument("--gallery", metavar="FILE.html", help="HTML page of thumbnails")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing index (--build: only a folder gzmorph wrote as an index), "
                   "--out or --gallery")


def _query(args: argparse.Namespace, index):
    import numpy as np

    from gzmorph.discovery.embed import Pca, embed_images, read_embeddings
    from gzmorph.errors import ConfigError

    if args.queries:
        emb = read_embeddings(args.queries)
        index.check(emb)
        rows = np.arange(len(emb.ids))
        if args.id:
            where = {str(v): i for i, v in enumerate(emb.ids)}
            missing = [i for i in args.id if i not in where]
            if missing:
                raise ConfigError(f"{args.queries}: no {emb.meta['id_column']} {missing[0]!r}")
            rows = np.asarray([where[i] for i in args.id])
        return index.similar_to_vectors(emb.vectors[rows], [str(v) for v in emb.ids[rows]], args.k)
    if args.image:
        from gzmorph.data.decode import decode

        meta = index.meta["embedding"]
        pca = Pca.load(index.directory / "pca.npz") if meta.get("pca") else None
        images = np.stack([decode(path, meta["image_size"]) for path in args.image])  # (Q, S, S, 3)
        vectors = embed_images(meta["model"], images, pca=pca, tta=meta["tta"], which=meta["which"])
        return index.similar_to_vectors(vectors, list(args.image), args.k)
    if args.id:
        return index.similar_to_ids(args.id, args.k)
    return None


def _check_outputs(args: argparse.Namespace, inputs: list) -> None:
    """The output guard for --out and --gallery, before any work: never an input, an existing file only
    with --overwrite."""
    from pathlib import Path

    from gzmorph.errors import OutputError
    from gzmorph.outputs import claim_file, refuse_overwrite

    given = [(option, Path(path)) for option, path in (("--out", args.out), ("--gallery", args.gallery)) if path]
    if len(given) == 2 and given[0][1].resolve() == given[1][1].resolve():
        raise OutputError(f"--gallery {args.gallery}: is also --out; give two files")
    queries = [args.queries, *(args.image or [])]
    for option, path in given:
        refuse_overwrite([*inputs, *(q for q in queries if q)], files=[path], option=option)
        claim_file(path, option=option, overwrite=args.overwrite)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gzmorph.discovery.embed import read_embeddings
    from gzmorph.discovery.gallery import write_gallery
    from gzmorph.discovery.index import (build_index, claim_index_folder, embedding_inputs, index_inputs,
                                         open_index)
    from gzmorph.errors import ConfigError
    from gzmorph.outputs import atomic_write

    if args.build:
        emb = read_embeddings(args.build)
        inputs = [*embedding_inputs(emb), Path(args.index)]
        claim_index_folder(Path(args.index), embedding_inputs(emb), args.overwrite)
        _check_outputs(args, inputs)  # before the build, so a wrong --out costs nothing
        index = build_index(emb, args.index, metric=args.metric, kind=args.kind, anomaly=args.anomaly,
                            anomaly_k=args.anomaly_k, overwrite=args.overwrite)
        print(f"index of {index.n} galaxies -> {args.index}")
    else:
        index = open_index(args.index)
        _check_outputs(args, index_inputs(index))
    if args.anomalies is not None:
        table, value, title = index.anomalies(args.anomalies), "anomaly", "Most anomalous galaxies"
        sections = [("highest anomaly score first", table)]
    else:
        table, value, title = _query(args, index), "distance", "Similar galaxies"
        if table is None:
            if args.build:
                return 0
            raise ConfigError("give --id, --image, --queries or --anomalies (or --build)")
        sections = [(f"query {q}", part) for q, part in table.groupby("query", sort=False)]
    if args.out:
        out = Path(args.out)
        parquet = out.suffix.lower() in (".parquet", ".pq")
        atomic_write(out, lambda tmp: table.to_parquet(tmp, index=False) if parquet else table.to_csv(tmp, index=False))
    else:
        print(table.to_string(index=False))
    if args.gallery:
        write_gallery(args.gallery, title, sections, index.id_column, value,
                      note=f"index {index.directory} ({index.n} galaxies, {index.meta['metric']} distance)")
    return 0
