"""gzmorph embed: invariant features streamed through the prediction job, PCA, resume, bad input."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from discovery_helpers import blob_images, make_p4m_run, save_png
from factories import make_run, run_killed
from gzmorph.cli import main
from gzmorph.discovery.embed import METADATA_KEY, embed_images, embed_to_file, pca_path, read_embeddings
from gzmorph.errors import CatalogError, ConfigError


@pytest.fixture(scope="module")
def p4m(tmp_path_factory):
    return make_p4m_run(tmp_path_factory.mktemp("p4m") / "run")


def test_p4m_embedding_is_exactly_invariant_to_turns_and_flips(p4m, tmp_path):
    images = blob_images(tmp_path / "img", 3)
    turned = [np.rot90(images[0], 1), np.rot90(images[0], 2), images[0][:, ::-1], np.rot90(images[1], 3)]
    x = embed_images(p4m, np.stack([*images, *turned]))
    assert x.shape == (7, 8)
    np.testing.assert_allclose(x[3:6], np.repeat(x[:1], 3, axis=0), rtol=0, atol=1e-5)
    np.testing.assert_allclose(x[6], x[1], rtol=0, atol=1e-5)
    assert np.abs(x[0] - x[1]).max() > 1e-3  # different galaxies stay apart


def test_embed_file_matches_in_memory_and_records_the_model(p4m, tmp_path):
    images = blob_images(tmp_path / "img", 9)
    summary = embed_to_file(p4m, tmp_path / "img", tmp_path / "e.parquet", chunk_rows=3, batch_size=3,
                            progress=False)
    assert (summary.n_predicted, summary.n_failed) == (9, 0)
    emb = read_embeddings(tmp_path / "e.parquet")
    assert list(emb.ids) == list(range(1000, 1009))
    np.testing.assert_allclose(emb.vectors, embed_images(p4m, np.stack(images)), atol=1e-5)
    meta = json.loads(pq.read_schema(tmp_path / "e.parquet").metadata[METADATA_KEY])
    assert meta["kind"].startswith("p4m") and meta["dim"] == 8 and len(meta["model_weights"]) == 40
    assert pq.ParquetFile(tmp_path / "e.parquet").metadata.num_row_groups == 3  # one per chunk: streamed


def test_pca_is_fitted_once_stored_and_reused(tmp_path):
    run = make_run(tmp_path / "run", 0)
    blob_images(tmp_path / "img", 12)
    embed_to_file(run, tmp_path / "img", tmp_path / "a.parquet", pca_dim=4, progress=False)
    a = read_embeddings(tmp_path / "a.parquet")
    assert a.vectors.shape == (12, 4) and pca_path(tmp_path / "a.parquet").is_file()
    assert "viewpoint" in a.meta["kind"]
    embed_to_file(run, tmp_path / "img", tmp_path / "b.parquet", pca=pca_path(tmp_path / "a.parquet"),
                  progress=False)
    b = read_embeddings(tmp_path / "b.parquet")
    np.testing.assert_allclose(b.vectors, a.vectors, atol=1e-5)
    assert b.digest == a.digest  # same model, same PCA: comparable


def test_bad_image_is_an_error_row_and_the_job_goes_on(p4m, tmp_path):
    blob_images(tmp_path / "img", 4)
    (tmp_path / "img" / "1004.png").write_bytes(b"not an image")
    summary = embed_to_file(p4m, tmp_path / "img", tmp_path / "e.parquet", progress=False)
    assert (summary.n_predicted, summary.n_failed) == (4, 1)
    assert "1004" in summary.errors_file.read_text()


@pytest.mark.slow
def test_killed_embed_resumes_to_a_byte_identical_file(p4m, tmp_path):
    blob_images(tmp_path / "img", 10)
    args = ["embed", "--model", str(p4m), "--images", str(tmp_path / "img"), "--chunk-rows", "3", "--batch-size", "3",
            "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "whole.parquet")]) == 0
    status = run_killed("gzmorph.inference.parts:PartStore.write", 2, [*args, "--out", str(tmp_path / "k.parquet")])
    assert status == -9 and not (tmp_path / "k.parquet").exists()
    assert len(list((tmp_path / "k.parquet.parts").glob("part-*.parquet"))) == 2
    assert main([*args, "--out", str(tmp_path / "k.parquet"), "--resume"]) == 0
    assert (tmp_path / "k.parquet").read_bytes() == (tmp_path / "whole.parquet").read_bytes()


def test_nan_vectors_and_foreign_files_are_refused_in_one_line(p4m, tmp_path):
    blob_images(tmp_path / "img", 3)
    embed_to_file(p4m, tmp_path / "img", tmp_path / "e.parquet", progress=False)
    table = pq.read_table(tmp_path / "e.parquet")
    vec = table.column("embedding").combine_chunks()
    flat = vec.flatten().to_numpy(zero_copy_only=False).copy()
    flat[8] = np.nan  # row 1
    import pyarrow as pa

    bad = table.set_column(2, "embedding", pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), 8))
    pq.write_table(bad, tmp_path / "nan.parquet")
    with pytest.raises(CatalogError, match=r"row 1 \(GalaxyID 1001\) has a NaN"):
        read_embeddings(tmp_path / "nan.parquet")
    pq.write_table(table.replace_schema_metadata(None), tmp_path / "plain.parquet")
    with pytest.raises(CatalogError, match="not an embedding file"):
        read_embeddings(tmp_path / "plain.parquet")
    with pytest.raises(ConfigError, match="must be a .parquet"):
        embed_to_file(p4m, tmp_path / "img", tmp_path / "e.csv", progress=False)


def test_embed_cli_refuses_an_onnx_like_model_without_features(tmp_path, capsys):
    save_png(tmp_path / "img" / "1.png", np.zeros((40, 40, 3)))
    assert main(["embed", "--model", str(tmp_path / "nothing"), "--images", str(tmp_path / "img"),
                 "--out", str(tmp_path / "e.parquet")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
