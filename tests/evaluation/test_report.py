"""The HTML evaluation report: plots written, self-contained page, renders in a browser."""

import base64
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from gzmorph.evaluation.evaluate import evaluate
from gzmorph.evaluation.report import write_report
from gzmorph.tree import GZ2

LABELLED = [c for c in GZ2.columns if c.split(".")[0] in ("Class1", "Class2", "Class6", "Class7", "Class8")]


@pytest.fixture(scope="module")
def evaluation():
    """A GZ2 evaluation with 5 labelled questions (like the Kaggle 5k subset)."""
    rng = np.random.default_rng(0)
    n = 200
    probs = np.zeros((n, GZ2.n_answers))
    for q, sl, parent in zip(GZ2.questions, GZ2.slices, GZ2.parent_answer):
        scale = 1.0 if parent < 0 else probs[:, parent : parent + 1]
        probs[:, sl] = rng.dirichlet(np.full(len(q.columns), 0.5), size=n) * scale
    noisy = np.clip(probs + rng.normal(0, 0.1, probs.shape), 0, 1)
    preds = pd.DataFrame(noisy, columns=GZ2.columns).assign(GalaxyID=np.arange(n))
    labels = pd.DataFrame(probs, columns=GZ2.columns)[LABELLED].assign(GalaxyID=np.arange(3, n + 3))
    return evaluate(preds, labels, target_accuracy=0.995)


def test_every_plot_is_written_and_embedded(evaluation, tmp_path):
    path = write_report(evaluation, tmp_path, title="Test <report>")
    assert path == tmp_path / "report.html"
    expected = {"rmse"} | {f"{q}_{kind}" for q in ("Q1", "Q2", "Q6", "Q7", "Q8") for kind in ("accuracy", "triage", "reliability", "fractions")}
    written = {p.stem: p for p in (tmp_path / "plots").glob("*.png")}
    assert set(written) == expected
    for p in written.values():
        assert p.stat().st_size > 5000
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size[0] > 300
    page = path.read_text(encoding="utf-8")
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(embedded) == len(expected)
    assert {base64.b64decode(e) for e in embedded} == {p.read_bytes() for p in written.values()}
    # Self-contained: nothing is fetched from elsewhere.
    assert not re.search(r'(src|href)="(?!data:)', page)
    assert "<title>Test &lt;report&gt;</title>" in page


def test_report_says_which_questions_lack_labels(evaluation, tmp_path):
    page = write_report(evaluation, tmp_path).read_text(encoding="utf-8")
    assert "Not evaluated — the labels lack these questions:</b> Q3, Q4, Q5, Q9, Q10, Q11" in page
    assert "Q11: How many spiral arms are there?" in page
    assert "3 ids are only in the predictions" in page and "3 ids are only in the labels" in page
    assert "17 answer columns" in page
    for q in ("Q1", "Q2", "Q6", "Q7", "Q8"):
        assert f"<h3>{q}: " in page


def test_unreachable_target_and_unreached_question_are_explained(tmp_path):
    # Q1 labelled, the model wrong on its most confident image -> no threshold reaches 100%;
    # Q2 labelled but nobody reaches it (Class1.2 < 0.5 everywhere).
    labels = pd.DataFrame({"GalaxyID": range(4), "Class1.1": [0.9, 0.2, 0.8, 0.7], "Class1.2": [0.1, 0.3, 0.2, 0.3],
                           "Class1.3": [0.0, 0.5, 0.0, 0.0], "Class2.1": [0.1, 0.3, 0.1, 0.2],
                           "Class2.2": [0.0, 0.0, 0.1, 0.1]})
    preds = labels.reindex(columns=["GalaxyID", *GZ2.columns], fill_value=0.0)
    preds.loc[0, ["Class1.1", "Class1.2"]] = [0.0, 1.0]
    ev = evaluate(preds, labels, target_accuracy=1.0, n_bins=2)
    assert ev.thresholds["Q1"] > 1 and ev.coverage["Q1"] == 0.0
    page = write_report(ev, tmp_path).read_text(encoding="utf-8")
    assert "none: all to experts" in page and "every reached image goes to experts" in page
    assert re.search(r"Q2: Could this be a disk viewed edge-on\?</h3>\s*<p class=.warn.>No image has labels reaching",
                     page)
    assert not (tmp_path / "plots" / "Q2_accuracy.png").exists()
    assert (tmp_path / "plots" / "Q1_triage.png").stat().st_size > 0


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_report_renders_in_headless_chromium(evaluation, tmp_path):
    path = write_report(evaluation, tmp_path)
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--hide-scrollbars", "--window-size=1200,3000", f"--screenshot={shot}", path.as_uri()],
                   check=True, capture_output=True, timeout=120)
    with Image.open(shot) as im:
        pixels = np.asarray(im.convert("RGB"), dtype=np.float32)
    assert pixels.shape[:2] == (3000, 1200)
    # Rendered content: plenty of non-white pixels, including the blue of the plots' lines
    # and the RMSE bars (a blank or broken page would be white or have no images).
    assert (pixels.mean(axis=2) < 200).mean() > 0.01
    blue = (pixels[..., 2] > 150) & (pixels[..., 0] < 80)
    assert blue.sum() > 1000
