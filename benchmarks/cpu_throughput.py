"""Survey-scale prediction on CPUs: images/s end to end, where the time goes, memory, accuracy.

Each measurement runs in a fresh process (``--one``), so start-up (interpreter, imports,
loading the model) is counted and peak memory is the job's own:

- ``img/s incl. start-up``: inputs / seconds from the launch of the process to the
  output file written;
- ``img/s excl. start-up``: inputs / seconds of the job itself, after the model is
  loaded and the source opened (``run_local_to_file``: decode, warp, network, tables,
  the Parquet file);
- the breakdown (:mod:`gzmorph.inference.timing`): ``decode`` (the decoding thread's
  seconds: it overlaps the rest), ``wait`` (the network's thread waiting for decoded
  images), ``warp``, ``forward``, ``table``, ``write``;
- ``peak MB``: the process's maximum resident set size.

The job is ``predict_to_file`` step by step (the same calls), so the output is the
file ``gzmorph predict`` writes.  ``--rmse LABELS`` also scores each output on the
labelled galaxies of a catalog (RMSE over the columns it has, "RMSE17" on the shared
data), to check that a speed path leaves the accuracy unchanged.

Run it with ``PYTHONPATH=<checkout>/src`` to measure another checkout (the pipeline
before this benchmark existed has no breakdown; its rates are still measured).

Examples::

    python benchmarks/cpu_throughput.py --model ../runs/p4m-dev --tta none rot
    python benchmarks/cpu_throughput.py --model ../runs/p4m-dev --variants fp32=--precision=fp32 \\
        onnx=--onnx --rmse ../runs/val500.csv --tta none
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

def full_res_catalog(out: Path, shared: Path, folders: list[Path], n: int | None, labels: Path | None) -> Path:
    """A catalog of the 424-px JPEGs: every ``*.jpg`` of ``folders`` or, with ``labels``, its GalaxyIDs."""
    import pandas as pd

    if labels is not None:  # e.g. val500.csv: GalaxyID + 17 columns + path of the 141-px copy
        ids = pd.read_csv(labels)["GalaxyID"].astype(int)
        paths = [shared / "images_training_rev1" / f"{i}.jpg" for i in ids]
        frame = pd.DataFrame({"GalaxyID": ids, "path": [str(p) for p in paths]})
    else:
        files = sorted(f for folder in folders for f in folder.glob("*.jpg"))
        frame = pd.DataFrame({"GalaxyID": [int(f.stem) for f in files], "path": [str(f) for f in files]})
    frame = frame.head(n) if n else frame
    frame.to_csv(out, index=False)
    return out


def one(args: argparse.Namespace) -> dict:
    """In the child process: the job, timed step by step."""
    import torch

    from gzmorph.inference import predict as predict_module
    from gzmorph.inference.config import PredictConfig
    from gzmorph.inference.job import PredictionJob
    from gzmorph.inference.science import output_extras

    t_imported = time.time()
    options = json.loads(args.config)
    cfg = PredictConfig(progress=False, **options)
    t0 = time.monotonic()
    job = PredictionJob.open(args.model, args.source, cfg, layout="parquet")
    manifest = job.manifest()
    extras = output_extras(job.ensemble, manifest, args.source, job.source.catalog, None, False)
    manifest["kept_columns"] = extras.kept_names
    t_open = time.monotonic()
    summary = predict_module.run_local_to_file(job, Path(args.out), manifest, cfg, resume=False, t0=t0,
                                               extras=lambda store: extras)
    t_end = time.monotonic()
    watch = getattr(job.ensemble, "stopwatch", None)
    threads = getattr(predict_module, "job_threads", lambda job: cfg.threads)(job)
    result = {
        "images": job.n, "predicted": summary.n_predicted, "failed": summary.n_failed,
        "seconds_since_launch": round(time.time() - args.launched, 3),
        "seconds_to_imported": round(t_imported - args.launched, 3), "seconds_open": round(t_open - t0, 3),
        "seconds_run": round(t_end - t_open, 3),
        "breakdown_s": {k: round(v, 3) for k, v in (watch.seconds() if watch else {}).items()},
        "bf16": getattr(job.ensemble, "bf16", None), "torch_threads": threads or torch.get_num_threads(),
        "batch_size": job.config.batch_size, "workers": cfg.workers,
        "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    result["img_s_incl_startup"] = round(job.n / result["seconds_since_launch"], 1)
    result["img_s_excl_startup"] = round(job.n / result["seconds_run"], 1)
    if args.labels:
        result["rmse"] = rmse(Path(args.out), Path(args.labels))
    return result


def rmse(out: Path, labels: Path) -> float:
    """RMSE over the label columns the catalog has (masked, as ``gzmorph evaluate``)."""
    import numpy as np
    import pandas as pd

    pred = pd.read_parquet(out).set_index("GalaxyID")
    truth = pd.read_csv(labels).set_index("GalaxyID")
    cols = [c for c in truth.columns if c.startswith("Class")]
    p = pred.loc[truth.index, cols].to_numpy(np.float64)
    y = truth[cols].to_numpy(np.float64)
    return round(float(np.sqrt(np.nanmean((p - y) ** 2))), 6)


def launch(args: argparse.Namespace, name: str, model: str, source: str, options: dict, out: Path,
           labels: Path | None) -> dict:
    """A fresh process for one measurement; returns its record with the load average."""
    load_before = os.getloadavg()[0]
    cmd = [sys.executable, __file__, "--one", "--model", model, "--source", source, "--out", str(out),
           "--config", json.dumps(options), "--launched", repr(time.time())]
    if labels is not None:
        cmd += ["--labels", str(labels)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if proc.returncode != 0:
        raise SystemExit(f"{name}: failed\n{proc.stderr[-3000:]}")
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"variant": name, **options, **record, "load_1min_before": round(load_before, 2),
            "load_1min_after": round(os.getloadavg()[0], 2)}


def parse_variant(spec: str) -> tuple[str, dict, bool]:
    """``name=--opt=value,--opt2=value`` -> (name, PredictConfig fields, use the ONNX file)."""
    name, _, rest = spec.partition("=")
    options, onnx = {}, False
    for part in filter(None, rest.split(",")):
        key, _, value = part.lstrip("-").partition("=")
        if key == "onnx":
            onnx = True
            continue
        options[key.replace("-", "_")] = json.loads(value) if value[:1].isdigit() or value in ("true", "false",
                                                                                               "null") else value
    return name, options, onnx


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(Path(__file__).resolve().parents[2] / "runs" / "p4m-dev"))
    p.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data",
                   help="the shared data folder (its gz2-kaggle-5k holds the 424-px JPEGs)")
    p.add_argument("--images", nargs="+", type=Path,
                   help="folders of JPEGs (default: the shared 5,000 + 146 full-resolution ones)")
    p.add_argument("--n", type=int, default=None, help="first N images only")
    p.add_argument("--tta", nargs="+", default=["none", "rot"])
    p.add_argument("--variants", nargs="+", default=["default="],
                   help="NAME=--field=value,... (PredictConfig fields; --onnx: the model's ONNX export)")
    p.add_argument("--onnx-file", type=Path, help="the model's ONNX export (made once with gzmorph export when absent)")
    p.add_argument("--cache", type=Path, help="also predict from this cache (gzmorph prepare)")
    p.add_argument("--rmse", type=Path, help="labelled catalog (GalaxyID + Class columns): score its galaxies instead")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "gzmorph-cpu-throughput")
    p.add_argument("--json", type=Path, help="append the records here (JSON lines)")
    # child-process options
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--source", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--labels", help=argparse.SUPPRESS)
    p.add_argument("--launched", type=float, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(args)))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    kaggle = args.shared / "gz2-kaggle-5k"
    folders = args.images or [kaggle / "images_training_rev1", kaggle / "images_test_rev1"]
    catalog = full_res_catalog(args.work / "catalog.csv", kaggle, folders, args.n, args.rmse)
    sources = [("jpeg-424", str(catalog))] + ([("cache", str(args.cache))] if args.cache else [])
    for spec in args.variants:
        name, options, onnx = parse_variant(spec)
        model = args.model
        if onnx:
            model = str(args.onnx_file or args.work / "model.onnx")
            if not Path(model).exists():
                subprocess.run([sys.executable, "-m", "gzmorph", "export", args.model, "--format", "onnx", "--out",
                                model], check=True)
        for source_name, source in sources:
            for tta in args.tta:
                out = args.work / f"{name}-{source_name}-{tta}.parquet"
                out.unlink(missing_ok=True)
                Path(f"{out}.errors.csv").unlink(missing_ok=True)
                Path(f"{out}.manifest.json").unlink(missing_ok=True)
                record = launch(args, name, model, source, {**options, "tta": tta}, out, args.rmse)
                record.update(source=source_name, model=model)
                print(json.dumps(record), flush=True)
                if args.json:
                    with open(args.json, "a") as f:
                        f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
