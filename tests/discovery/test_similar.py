"""gzmorph similar: faiss index, queries by id / image / other file, anomaly score, gallery, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from discovery_helpers import blob_images, make_p4m_run, save_png, write_embedding
from gzmorph.cli import main
from gzmorph.discovery.anomaly import anomaly_scores
from gzmorph.discovery.embed import embed_to_file, read_embeddings
from gzmorph.discovery.index import build_index, open_index
from gzmorph.errors import ConfigError

pytest.importorskip("faiss")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A p4m run, 12 blob galaxies, a turned copy of galaxy 1003 (id 5003) and their embedding."""
    root = tmp_path_factory.mktemp("similar")
    run = make_p4m_run(root / "run")
    images = blob_images(root / "img", 12)
    save_png(root / "img" / "5003.png", np.rot90(images[3], 1)[::-1])  # turned and flipped
    embed_to_file(run, root / "img", root / "e.parquet", progress=False)
    return root, run


def test_a_turned_copy_is_its_own_nearest_neighbour(world, tmp_path):
    root, _ = world
    index = build_index(root / "e.parquet", tmp_path / "ix")
    hits = index.similar_to_ids(["5003", "1003"], 2)
    first = hits[hits["rank"] == 1].set_index("query")
    assert first.loc["5003", "GalaxyID"] == 1003 and first.loc["1003", "GalaxyID"] == 5003
    assert first.loc["5003", "distance"] < 1e-6  # p4m: the same vector
    assert (hits["GalaxyID"].astype(str) != hits["query"]).all()  # a galaxy is not its own neighbour


@pytest.mark.parametrize("method", ["knn", "iforest"])
def test_a_planted_anomaly_ranks_first(tmp_path, method):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 3
    x = centres[rng.integers(0, 3, 300)] + 0.3 * rng.normal(size=(300, 16))
    x[137] = 6 * rng.normal(size=16)  # in no cluster
    index = build_index(write_embedding(tmp_path / "e.parquet", x), tmp_path / "ix", metric="l2", anomaly=method)
    assert index.anomalies(1)["GalaxyID"].item() == 137
    again = open_index(tmp_path / "ix")  # the column is stored with the index
    assert again.anomalies(1)["GalaxyID"].item() == 137
    scores = anomaly_scores(x.astype(np.float32), method, 5, index=index.faiss_index)
    assert int(np.argmax(scores)) == 137


def test_knn_score_ignores_the_point_itself_but_not_duplicates():
    import faiss

    x = np.array([[0, 0], [0, 0], [1, 0], [10, 0]], np.float32)
    index = faiss.IndexFlatL2(2)
    index.add(x)
    scores = anomaly_scores(x, "knn", 1, index=index)
    np.testing.assert_allclose(scores, [0, 0, 1, 9], atol=1e-6)


def test_cli_queries_by_id_and_by_image_and_writes_a_gallery(world, tmp_path, capsys):
    root, _ = world
    ix = tmp_path / "ix"
    assert main(["similar", str(ix), "--build", str(root / "e.parquet")]) == 0
    assert main(["similar", str(ix), "--id", "1003", "-k", "3", "--out", str(tmp_path / "hits.csv"),
                 "--gallery", str(tmp_path / "g.html")]) == 0
    html = (tmp_path / "g.html").read_text()
    assert html.count("data:image/jpeg;base64,") == 3 and "5003" in html
    # An image file outside the index, embedded with the index's model: a turned galaxy finds its original.
    turned = save_png(tmp_path / "q.png", np.rot90(np.asarray(__import__("PIL.Image").Image.open(
        root / "img" / "1007.png")), 2))
    assert main(["similar", str(ix), "--image", str(turned), "-k", "1", "--out", str(tmp_path / "q.csv")]) == 0
    assert (tmp_path / "q.csv").read_text().splitlines()[1].split(",")[2] == "1007"
    assert main(["similar", str(ix), "--anomalies", "4", "--gallery", str(tmp_path / "a.html")]) == 0
    assert (tmp_path / "a.html").read_text().count("<figure>") == 4


def test_bad_queries_are_one_line_errors(world, tmp_path, capsys):
    root, _ = world
    index = build_index(root / "e.parquet", tmp_path / "ix")
    with pytest.raises(ConfigError, match=r"GalaxyID '77' is not in the index"):
        index.similar_to_ids(["77"], 2)
    with pytest.raises(ConfigError, match=r"k=13 but the index .* has 13 items: k must be between 1 and 12"):
        index.similar_to_ids(["1003"], 13)
    with pytest.raises(ConfigError, match=r"k=14 .* between 1 and 13"):
        index.search(np.zeros((1, 8), np.float32), 14)
    with pytest.raises(ConfigError, match="NaN"):
        index.search(np.full((1, 8), np.nan, np.float32), 1)
    capsys.readouterr()
    assert main(["similar", str(tmp_path / "ix"), "--id", "1003", "-k", "50"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_an_embedding_of_another_model_is_refused(world, tmp_path, capsys):
    root, _ = world
    other = make_p4m_run(tmp_path / "other", seed=1)
    embed_to_file(other, root / "img", tmp_path / "other.parquet", progress=False)
    build_index(root / "e.parquet", tmp_path / "ix")
    capsys.readouterr()
    assert main(["similar", str(tmp_path / "ix"), "--queries", str(tmp_path / "other.parquet"), "--id", "1003"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "another model" in err and "other.parquet" in err
    # The same model's file is accepted.
    assert main(["similar", str(tmp_path / "ix"), "--queries", str(root / "e.parquet"), "--id", "1003",
                 "-k", "1", "--out", str(tmp_path / "same.csv")]) == 0
    assert (tmp_path / "same.csv").read_text().splitlines()[1].split(",")[2] == "1003"
    assert read_embeddings(tmp_path / "other.parquet").digest != read_embeddings(root / "e.parquet").digest
