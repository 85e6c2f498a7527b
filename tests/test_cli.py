"""The CLI layer: options generated from the configs, --config files, user errors vs bugs."""

from __future__ import annotations

import dataclasses
import json

import pytest

import gzmorph.commands.mock as mock_command
from gzmorph.cli import _apply_config_file, build_parser, main
from gzmorph.demo import DemoConfig
from gzmorph.evaluation.analyze import AnalyzeConfig
from gzmorph.evaluation.evaluate import EvaluationConfig
from gzmorph.inference.predict import PredictConfig
from gzmorph.inference.ray import RayConfig

BASE = {"predict": ["--model", "r", "--images", "i", "--out", "o.csv"],
        "evaluate": ["--predictions", "p.csv", "--labels", "l.csv", "--out", "r"],
        "analyze": ["--model", "r", "--images", "i", "--out", "a"], "demo": []}


def _parse(argv):
    parser = build_parser()
    _apply_config_file(parser, argv)
    return parser.parse_args(argv)


@pytest.mark.parametrize("command, cls, skip, rename, prefix", [
    ("predict", PredictConfig, {"progress"}, {}, ""),
    ("predict", RayConfig, {"address"}, {}, "ray_"),
    ("evaluate", EvaluationConfig, set(), {"n_bins": "bins"}, ""),
    ("analyze", AnalyzeConfig, set(), {"n_units": "units", "n_examples": "examples", "n_errors": "errors"}, ""),
    ("demo", DemoConfig, set(), {"n_galaxies": "n"}, ""),
])
def test_every_config_field_is_an_option_with_the_config_default(command, cls, skip, rename, prefix):
    args = _parse([command, *BASE[command]])
    for f in dataclasses.fields(cls):
        if f.name not in skip:
            assert getattr(args, rename.get(f.name, prefix + f.name)) == f.default, f.name


def test_field_docs_are_the_help_and_doc_choices_are_the_choices(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["predict", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--tta {none,rot,paper}" in text and "--precision {auto,fast,fp32,bf16}" in text
    assert "Rows per written chunk (Parquet row group)" in text  # PredictConfig's docstring
    assert "CPUs reserved by each actor" in text  # RayConfig's docstring
    with pytest.raises(SystemExit):
        build_parser().parse_args(["predict", *BASE["predict"], "--tta", "all"])


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_a_config_file_sets_options_and_the_command_line_wins(tmp_path, suffix):
    path = tmp_path / f"run{suffix}"
    values = {"batch-size": 8, "tta": "rot", "model": ["a", "b"], "images": "imgs", "out": "o.parquet"}
    path.write_text(json.dumps(values))  # JSON is YAML too
    args = _parse(["predict", "--config", str(path), "--tta", "paper"])
    assert (args.batch_size, args.tta, args.model, args.out) == (8, "paper", ["a", "b"], "o.parquet")


def test_a_config_file_with_an_unknown_option_is_a_user_error(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("bins: 5\nbogus: 1\n")
    assert main(["evaluate", "--config", str(tmp_path / "c.yaml")]) == 2
    assert "no option bogus" in capsys.readouterr().err


def test_user_errors_are_one_line_and_bugs_show_their_traceback(tmp_path, monkeypatch, capsys):
    assert main(["mock", "--n", "0", "--out", str(tmp_path / "m")]) == 2  # a ConfigError
    err = capsys.readouterr().err
    assert err.startswith("gzmorph mock: error:") and "Traceback" not in err
    assert main(["evaluate", *BASE["evaluate"], "--bins", "0"]) == 2  # config validation
    assert "EvaluationConfig" in capsys.readouterr().err

    def bug(args):
        raise ValueError("shape mismatch in a tensor op")  # not a user error: a bug

    monkeypatch.setattr(mock_command, "run", bug)
    with pytest.raises(ValueError, match="shape mismatch"):
        main(["mock", "--n", "1", "--out", str(tmp_path / "m")])
