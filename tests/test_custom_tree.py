"""A user-defined decision tree works end to end: train -> predict -> evaluate, from the CLI."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from gzmorph.cli import main
from gzmorph.tree import Question, Tree, TreeConstraint

TREE = Tree(
    "bars",
    (
        Question("S", "Smooth or featured?", ("smooth", "featured"), ("smooth", "featured")),
        Question("B", "Is there a bar?", ("bar", "no bar", "unsure"), ("bar", "no_bar", "unsure"), parent="featured"),
    ),
)


@pytest.mark.slow
def test_custom_tree_end_to_end(tmp_path, capsys):
    rng = np.random.default_rng(1)
    images = tmp_path / "images"
    images.mkdir()
    n = 40
    raw = rng.normal(size=(n, TREE.n_answers)).astype(np.float32)
    rows = []
    for i in range(n):
        level = int(rng.integers(20, 235))
        raw[i, 1] = 3 * (level / 255 - 0.5)
        Image.fromarray(np.clip(rng.normal(level, 20, (64, 64, 3)), 0, 255).astype(np.uint8)).save(
            images / f"g{i:03d}.png")
        rows.append({"objid": f"g{i:03d}", "file": f"images/g{i:03d}.png"})
    labels = TreeConstraint(TREE)(torch.from_numpy(raw)).numpy()
    catalog = pd.concat([pd.DataFrame(rows), pd.DataFrame(labels, columns=TREE.columns)], axis=1)
    catalog.to_parquet(tmp_path / "catalog.parquet")
    tree_file = tmp_path / "tree.json"
    tree_file.write_text(json.dumps(TREE.to_dict()))
    cat = ["--id-column", "objid", "--path-column", "file"]

    assert main(["train", "--data", str(tmp_path / "catalog.parquet"), "--out", str(tmp_path / "run"),
                 "--preset", "small", "--examples", "128", "--batch-size", "16", "--eval-every", "64",
                 "--image-size", "48", "--tree", str(tree_file), "--workers", "0", "--no-progress",
                 "--device", "cpu", *cat]) == 0
    out = tmp_path / "preds.parquet"
    assert main(["predict", "--model", str(tmp_path / "run"), "--catalog", str(tmp_path / "catalog.parquet"),
                 "--out", str(out), "--workers", "0", "--no-progress", "--device", "cpu", *cat]) == 0
    preds = pd.read_parquet(out)
    assert list(preds.columns[:6]) == ["objid", "smooth", "featured", "bar", "no_bar", "unsure"]
    assert {"S_answer", "S_confidence", "B_reach", "B_needs_expert", "needs_expert"} <= set(preds.columns)
    p = preds[TREE.columns].to_numpy()
    np.testing.assert_allclose(p[:, :2].sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(p[:, 2:].sum(1), p[:, 1], atol=1e-5)

    assert main(["evaluate", "--predictions", str(out), "--labels", str(tmp_path / "catalog.parquet"),
                 "--out", str(tmp_path / "report"), "--tree", str(tree_file), "--id-column", "objid"]) == 0
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["n_matched"] == n
    # The report's RMSE is that of these predictions against these labels (joined on objid).
    truth = catalog.set_index("objid").loc[preds["objid"], TREE.columns].to_numpy()
    assert metrics["rmse"] == pytest.approx(float(np.sqrt(np.mean((p - truth) ** 2))), rel=1e-5)
    assert (tmp_path / "report" / "report.html").stat().st_size > 0
