"""``gzmorph train --augment-*``: the survey-robust augmentation strengths from the command line."""

from __future__ import annotations

import json

from gzmorph.cli import main
from gzmorph.training.recipes import ROBUST_AUGMENT


def test_strengths_from_the_cli_reach_the_stored_config(tiny_kaggle, tmp_path, capsys):
    out = tmp_path / "r"
    code = main(["train", "--data", str(tiny_kaggle), "--out", str(out), "--preset", "small", "--examples", "16",
                 "--batch-size", "8", "--eval-every", "16", "--image-size", "48", "--no-progress",
                 "--augment-psf-blur", "1.5", "--augment-noise", "0.01", "--augment-survey-prob", "0.5"])
    assert code == 0, capsys.readouterr().err
    aug = json.loads((out / "config.json").read_text())["train"]["augment"]
    assert (aug["psf_blur"], aug["noise"], aug["survey_prob"]) == (1.5, 0.01, 0.5)
    assert aug["degrade"] == 0.0 and aug["stretch_jitter"] == 0.0  # not given: the preset's (off in small)


def test_unset_options_keep_the_preset_strengths_and_bad_ones_are_one_line(tiny_kaggle, tmp_path, capsys):
    out = tmp_path / "r"
    code = main(["train", "--data", str(tiny_kaggle), "--out", str(out), "--preset", "p4m-robust",
                 "--augment-noise", "0.9", "--examples", "16"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "noise must be in [0, 0.5]" in err
    assert not (out / "config.json").exists()
    code = main(["train", "--data", str(tiny_kaggle), "--out", str(out), "--preset", "p4m-robust", "--examples", "16",
                 "--batch-size", "8", "--eval-every", "16", "--image-size", "48", "--no-progress",
                 "--augment-color-jitter", "0"])
    assert code == 0, capsys.readouterr().err
    aug = json.loads((out / "config.json").read_text())["train"]["augment"]
    assert aug["color_jitter"] == 0.0
    assert all(aug[k] == v for k, v in ROBUST_AUGMENT.items() if k != "color_jitter")
