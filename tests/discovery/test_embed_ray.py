"""gzmorph embed --ray: the chunks on Ray actors, the same file (PCA included) as in this process."""

from __future__ import annotations

import numpy as np
import pytest

from discovery_helpers import blob_images, make_p4m_run
from gzmorph.cli import main
from gzmorph.discovery.embed import embed_to_file, pca_path, read_embeddings

ray = pytest.importorskip("ray")

from gzmorph.inference.ray import RayConfig  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


def test_embed_on_ray_writes_the_local_file_byte_for_byte(ray_cluster, tmp_path):
    run = make_p4m_run(tmp_path / "run")
    blob_images(tmp_path / "img", 10)
    (tmp_path / "img" / "1010.png").write_bytes(b"not an image")
    opts = dict(chunk_rows=3, batch_size=3, progress=False, pca_dim=3)
    local = embed_to_file(run, tmp_path / "img", tmp_path / "local.parquet", **opts)
    on_ray = embed_to_file(run, tmp_path / "img", tmp_path / "ray.parquet", pca=pca_path(tmp_path / "local.parquet"),
                           ray_config=RayConfig(actors=2, cpus_per_actor=1), chunk_rows=3, batch_size=3,
                           progress=False)
    assert (on_ray.n_predicted, on_ray.n_failed) == (local.n_predicted, local.n_failed) == (10, 1)
    a, b = read_embeddings(tmp_path / "local.parquet"), read_embeddings(tmp_path / "ray.parquet")
    assert list(b.ids) == list(a.ids) and b.vectors.shape == (10, 3)
    np.testing.assert_array_equal(b.vectors, a.vectors)  # the PCA travelled with the job to the actors
    assert b.digest == a.digest
    assert "1010" in on_ray.errors_file.read_text()


def test_embed_cli_with_ray_matches_without(ray_cluster, tmp_path):
    run = make_p4m_run(tmp_path / "run")
    blob_images(tmp_path / "img", 7)
    args = ["embed", "--model", str(run), "--images", str(tmp_path / "img"), "--chunk-rows", "2", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "a.parquet")]) == 0
    assert main([*args, "--out", str(tmp_path / "b.parquet"), "--ray", "--ray-actors", "2"]) == 0
    assert (tmp_path / "b.parquet").read_bytes() == (tmp_path / "a.parquet").read_bytes()
