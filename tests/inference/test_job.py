"""gzmorph.inference.job: one prediction job; each chunk computed alone gives the rows it gives in a run."""

import pickle
import warnings

import pyarrow as pa
import pytest

from gzmorph.inference.config import PredictConfig
from gzmorph.inference.job import PredictionJob, job_manifest

from factories import make_images, make_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    root = tmp_path_factory.mktemp("job")
    paths = make_images(root / "images", 11)
    paths[5].write_bytes(b"")
    run = make_run(root / "run", 3)
    cfg = PredictConfig(device="cpu", workers=0, progress=False, batch_size=3, chunk_rows=4)
    return PredictionJob.open(run, root / "images", cfg, layout="parquet")


def test_chunks_hold_whole_batches_and_cover_every_row(job):
    assert job.config.chunk_rows == 6  # rounded up to a multiple of the batch size
    assert job.n == 11 and job.n_chunks == 2
    assert [job.rows(k).tolist() for k in range(2)] == [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10]]
    assert job.todo({0}) == [1] and job.count([1]) == 5


def test_a_chunk_alone_gives_the_rows_it_gives_in_a_whole_run(job):
    parts: dict[int, tuple[pa.Table, pa.Table]] = {}
    job.run_local([0, 1], lambda k, table, errors: parts.__setitem__(k, (table, errors)))
    alone = job.compute_chunk(1, job.stream([1], workers=0))
    assert alone[0].equals(parts[1][0]) and alone[1].equals(parts[1][1])
    table, errors = parts[0]
    assert table.column("GalaxyID").to_pylist() == [1000, 1001, 1002, 1003, 1004]
    assert errors.to_pydict() == {"GalaxyID": [1005], "path": [str(job.source.catalog.paths[5])],
                                  "reason": ["empty file"]}
    # What the Ray executor does: the job travels pickled and computes the same chunk.
    remote = pickle.loads(pickle.dumps(job))
    assert remote.compute_chunk(1, remote.stream([1], workers=0))[0].equals(parts[1][0])


def test_the_manifest_changes_with_what_the_bytes_depend_on(job):
    base = job.manifest()
    assert base["layout"] == "parquet" and base["n_inputs"] == 11 and base["chunk_rows"] == 6
    other = job_manifest(job.ensemble, PredictConfig(tta="rot", batch_size=3, chunk_rows=4), job.source.catalog,
                         job.thresholds, job.image_size, "parquet")
    assert {k for k in base if base[k] != other[k]} == {"tta"}


def test_untrained_answers_are_nan_except_in_the_kaggle_csv(tmp_path):
    make_images(tmp_path / "images", 2)
    run = make_run(tmp_path / "run", 4, data={"label_columns": ["Class1.1", "Class1.2", "Class1.3"]})
    cfg = PredictConfig(device="cpu", workers=0, progress=False)
    with pytest.warns(UserWarning, match="written as NaN"):
        parquet = PredictionJob.open(run, tmp_path / "images", cfg, layout="ray-parts")
    assert parquet.trained is not None and parquet.trained.sum() == 3
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        csv = PredictionJob.open(run, tmp_path / "images", cfg, layout="csv")
    assert csv.trained is None
    table, _ = parquet.compute_chunk(0, parquet.stream([0], workers=0))
    frame = table.to_pandas()
    assert frame["Class2.1"].isna().all() and frame["Class1.1"].notna().all() and not frame["Q2_needs_expert"].any()
