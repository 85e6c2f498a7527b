"""The output-path guard (issue 25) over the discovery commands: `similar --build`, `--out`, `--gallery`, embed.

No command writes into or deletes an input or a path it did not create, unless told so
with an explicit flag; an index folder carries the ``"index"`` marker and only such a
folder is ever replaced (with ``--overwrite``).
"""

from __future__ import annotations

import hashlib

import pytest

from discovery_helpers import blob_images, make_p4m_run
from gzmorph.cli import main
from gzmorph.discovery.embed import embed_to_file, read_embeddings
from gzmorph.discovery.index import build_index, open_index
from gzmorph.errors import OutputError
from gzmorph.outputs import MARKER, folder_kind

pytest.importorskip("faiss")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A p4m run, 8 blob galaxies in img/ and their embedding e.parquet (beside img/)."""
    root = tmp_path_factory.mktemp("guard")
    run = make_p4m_run(root / "run")
    blob_images(root / "img", 8)
    embed_to_file(run, root / "img", root / "e.parquet", progress=False)
    return root, run


def _digests(folder):
    return {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_issue25_discovery_index_in_an_image_folder_is_refused(world, capsys):
    root, run = world
    before = _digests(root / "img")
    for folder in (root / "img", root / "img" / "ix", run, run / "ix"):  # the images, a run, inside either
        with pytest.raises(OutputError, match="input"):
            build_index(root / "e.parquet", folder)
    capsys.readouterr()
    assert main(["similar", str(root / "img"), "--build", str(root / "e.parquet"), "--overwrite"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert _digests(root / "img") == before and not (root / "img" / "ix").exists() and not (run / "ix").exists()
    # The folder holding the embedding file is an input too (it holds e.parquet).
    with pytest.raises(OutputError, match="holds the input"):
        build_index(root / "e.parquet", root)


def test_issue25_discovery_a_non_index_folder_is_never_replaced_even_with_overwrite(world, tmp_path, capsys):
    root, _ = world
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    (mine / "index.json").write_text("{}")  # a common file name proves nothing
    for extra in ([], ["--overwrite"]):
        assert main(["similar", str(mine), "--build", str(root / "e.parquet"), *extra]) == 2
        assert "not empty and was not written as a similarity index" in capsys.readouterr().err
    assert sorted(p.name for p in mine.iterdir()) == ["index.json", "notes.txt"]
    assert (mine / "notes.txt").read_text() == "my notes"


def test_issue25_discovery_an_index_is_replaced_only_with_overwrite(world, tmp_path, capsys):
    root, _ = world
    ix = tmp_path / "ix"
    assert main(["similar", str(ix), "--build", str(root / "e.parquet")]) == 0
    assert folder_kind(ix) == "index" and (ix / MARKER).is_file()
    assert main(["similar", str(ix), "--build", str(root / "e.parquet"), "--metric", "l2"]) == 2
    assert "already holds an index; pass --overwrite" in capsys.readouterr().err
    assert open_index(ix).meta["metric"] == "cosine"
    assert main(["similar", str(ix), "--build", str(root / "e.parquet"), "--metric", "l2", "--overwrite"]) == 0
    assert open_index(ix).meta["metric"] == "l2" and folder_kind(ix) == "index"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # the swap leaves nothing behind
    # A file of the user's put into the index folder is never deleted by a replacement.
    (ix / "my.csv").write_text("keep")
    assert main(["similar", str(ix), "--build", str(root / "e.parquet"), "--overwrite"]) == 2
    assert "'my.csv', which is not a file of an index" in capsys.readouterr().err
    assert (ix / "my.csv").read_text() == "keep" and open_index(ix).meta["metric"] == "l2"


def test_issue25_discovery_out_never_replaces_the_embedding_file(world, tmp_path, capsys):
    root, _ = world
    build_index(root / "e.parquet", tmp_path / "ix")
    before = _digests(root)
    for out in (root / "e.parquet", tmp_path / "ix" / "items.parquet", tmp_path / "ix" / "hits.csv",
                root / "img" / "hits.csv"):
        for extra in ([], ["--overwrite"]):
            assert main(["similar", str(tmp_path / "ix"), "--id", "1003", "-k", "2", "--out", str(out), *extra]) == 2
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1 and err.count("input") >= 1, err
    assert _digests(root) == before
    assert read_embeddings(root / "e.parquet").vectors.shape == (8, 8)
    assert open_index(tmp_path / "ix").n == 8
    # With --build, the check comes before the index is built: nothing is written.
    assert main(["similar", str(tmp_path / "ix2"), "--build", str(root / "e.parquet"), "--id", "1003",
                 "--out", str(root / "e.parquet"), "--overwrite"]) == 2
    assert not (tmp_path / "ix2").exists() and _digests(root) == before


def test_issue25_discovery_gallery_never_replaces_an_input(world, tmp_path, capsys):
    root, _ = world
    build_index(root / "e.parquet", tmp_path / "ix")
    before = _digests(root)
    for gallery in (root / "img" / "1003.png", root / "e.parquet", tmp_path / "ix" / "index.json"):
        for extra in ([], ["--overwrite"]):
            assert main(["similar", str(tmp_path / "ix"), "--anomalies", "3", "--gallery", str(gallery), *extra]) == 2
            assert "input" in capsys.readouterr().err
    assert _digests(root) == before and open_index(tmp_path / "ix").n == 8
    # A query image is an input too.
    query = root / "img" / "1005.png"
    assert main(["similar", str(tmp_path / "ix"), "--image", str(query), "--gallery", str(query), "--overwrite"]) == 2
    # An existing file that is no input is replaced only with --overwrite; --out and --gallery differ.
    page = tmp_path / "page.html"
    page.write_text("mine")
    assert main(["similar", str(tmp_path / "ix"), "--anomalies", "3", "--gallery", str(page)]) == 2
    assert "exists; choose another name, or pass --overwrite" in capsys.readouterr().err
    assert page.read_text() == "mine"
    assert main(["similar", str(tmp_path / "ix"), "--anomalies", "3", "--gallery", str(page), "--overwrite"]) == 0
    assert page.read_text().count("<figure>") == 3
    assert main(["similar", str(tmp_path / "ix"), "--anomalies", "3", "--gallery", str(page), "--out", str(page),
                 "--overwrite"]) == 2
    assert _digests(root) == before


def test_issue25_discovery_embed_records_its_collection_and_refuses_an_out_inside_it(world):
    root, run = world
    # The collection is recorded, so an index's outputs know it as an input.
    assert read_embeddings(root / "e.parquet").meta["source"] == str((root / "img").resolve())
    before = _digests(root / "img")
    for out in (root / "img" / "e.parquet", run / "e.parquet"):  # embed's own guard (inference.parts)
        with pytest.raises(OutputError, match="inside the input folder"):
            embed_to_file(run, root / "img", out, progress=False)
    assert _digests(root / "img") == before and not (run / "e.parquet").exists()
