"""``gzmorph export``: a trained run as a model package (safetensors + card) or an ONNX file."""

from __future__ import annotations

import argparse

HELP = "share a trained run: a pickle-free model package with its card, or an ONNX file; --push to the Hub"
DESCRIPTION = (
    "Write the run RUN as a self-contained model package OUT (a new folder: model.safetensors, config.json, "
    "model card README.md; --onnx adds model.onnx), or with --format onnx as one ONNX file OUT (the network "
    "from the crops to the constrained answers, dynamic batch axis, checked with onnx.checker and compared "
    "with torch). Any command that takes --model loads either, or a package on the Hugging Face Hub as "
    "hf:ORG/NAME[@REVISION]. Needs pip install 'gzmorph[share]'."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="run directory written by `gzmorph train` (with --format onnx also "
                                              "a model package or hf:ORG/NAME[@REVISION])")
    p.add_argument("--out", required=True, metavar="PATH", help="package folder to create, or the .onnx file")
    p.add_argument("--format", choices=("package", "onnx"), default="package", help="what to write")
    p.add_argument("--which", choices=("best", "last"), default="best", help="checkpoint to export")
    p.add_argument("--report", metavar="REPORT",
                   help="`gzmorph evaluate` report folder: its metrics (and thresholds) go into the model card")
    p.add_argument("--triage-thresholds", metavar="FILE", help="triage thresholds file for the card and config.json")
    p.add_argument("--onnx", action="store_true", help="also write model.onnx into the package")
    p.add_argument("--push", metavar="hf:ORG/NAME[@REVISION]",
                   help="upload the package to this Hugging Face Hub repository (created when missing)")
    p.add_argument("--private", action="store_true", help="with --push: create the repository private")


def run(args: argparse.Namespace) -> int:
    from gzmorph.errors import ConfigError
    from gzmorph.models.hub import parse_ref
    from gzmorph.models.package import read_package_config
    from gzmorph.sharing.hub import push
    from gzmorph.sharing.onnx_model import export_onnx
    from gzmorph.sharing.package import export_package
    from gzmorph.models.resolve import resolve_model

    ref = parse_ref(args.push) if args.push else None
    if args.push and ref is None:
        raise ConfigError(f"--push {args.push}: give the repository as hf:ORG/NAME[@REVISION]")
    if args.format == "onnx":
        if ref is not None or args.onnx or args.report or args.triage_thresholds:
            raise ConfigError("--push, --onnx, --report and --triage-thresholds go with --format package "
                              "(a package can hold model.onnx: --onnx)")
        if not args.out.lower().endswith(".onnx"):
            raise ConfigError(f"--out {args.out}: name the ONNX file *.onnx")
        # A package or a Hub model converts too (an ONNX file does not: "exported" again).
        result = export_onnx(resolve_model(args.run, args.which, device="cpu", purpose="exported again"), args.out)
        print(f"ONNX model -> {result['path']} (checked; largest difference from torch "
              f"{result['max_abs_diff']:.1e})")
        return 0
    out = export_package(args.run, args.out, which=args.which, report=args.report,
                         thresholds=args.triage_thresholds, onnx=args.onnx)
    sha = read_package_config(out)["weights"]["sha256"]
    print(f"model package -> {out} (model.safetensors sha256 {sha})")
    if ref is not None:
        print(f"pushed to {ref}: {push(out, ref, private=args.private)}")
    return 0
