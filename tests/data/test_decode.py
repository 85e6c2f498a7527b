"""Decoding: formats, modes, sizes, broken files, parallel streaming."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gzmorph.data.decode import DEFAULT_SIZE, ImageError, decode
from gzmorph.data.pool import iter_decoded, load_images


def _galaxy(side: int, seed: int = 0) -> np.ndarray:
    """A smooth blob on dark sky plus mild noise: JPEG-friendly and position-dependent."""
    y, x = np.mgrid[:side, :side] / side - 0.5
    blob = np.exp(-(x**2 + (y * 1.5) ** 2) / 0.02)
    rgb = np.stack([blob * 230, blob * 200 + 10 * x, blob * 150 + 20], axis=-1)
    rgb += np.random.default_rng(seed).normal(0, 2, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _save(path: Path, arr: np.ndarray, mode: str | None = None, **kw) -> Path:
    im = Image.fromarray(arr)
    if mode:
        im = im.convert(mode)
    im.save(path, **kw)
    return path


@pytest.fixture
def jpeg(tmp_path: Path) -> Path:
    return _save(tmp_path / "g.jpg", _galaxy(424), quality=95)


def test_native_decode_matches_pillow(jpeg: Path) -> None:
    out = decode(jpeg, size=None)
    assert out.shape == (424, 424, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.asarray(Image.open(jpeg).convert("RGB")))


def test_reduced_decode_is_close_to_full_decode_then_resize(jpeg: Path) -> None:
    out = decode(jpeg)  # draft at 1/2 scale, then box resize 212 -> 141
    assert out.shape == (DEFAULT_SIZE, DEFAULT_SIZE, 3) and out.flags.writeable
    reference = np.asarray(Image.open(jpeg).convert("RGB").resize((141, 141), Image.Resampling.BOX))
    # DCT scaling differs from a pixel-domain box filter only by small rounding.
    assert np.abs(out.astype(int) - reference.astype(int)).mean() < 1.5


def test_size_larger_than_half_decodes_fully(jpeg: Path) -> None:
    out = decode(jpeg, size=300)
    reference = np.asarray(Image.open(jpeg).convert("RGB").resize((300, 300), Image.Resampling.BOX))
    np.testing.assert_array_equal(out, reference)


@pytest.mark.parametrize("mode", ["L", "CMYK", "P"])
def test_other_modes_become_rgb(tmp_path: Path, mode: str) -> None:
    suffix = ".png" if mode == "P" else ".jpg"
    path = _save(tmp_path / f"g{suffix}", _galaxy(200), mode)
    out = decode(path, size=64)
    assert out.shape == (64, 64, 3)
    centre, corner = out[28:36, 28:36].mean(), out[:6, :6].mean()
    assert centre > corner + 50  # the galaxy is still bright on dark sky after conversion
    if mode == "L":
        assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_png_rgba_transparent_pixels_are_black(tmp_path: Path) -> None:
    rgba = np.zeros((50, 50, 4), np.uint8)
    rgba[..., :3] = 255  # white colour under full transparency must not show
    rgba[20:30, 20:30, 3] = 255
    path = _save(tmp_path / "a.png", rgba)
    out = decode(path, size=None)
    assert out[0, 0].tolist() == [0, 0, 0] and out[25, 25].tolist() == [255, 255, 255]


def test_16bit_png_is_rescaled_not_clipped(tmp_path: Path) -> None:
    ramp = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)  # up to 65520
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)
    out = decode(path, size=None)
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255 and 100 < out[32, 0, 0] < 155


def test_non_square_is_centre_cropped(tmp_path: Path) -> None:
    arr = np.zeros((100, 300, 3), np.uint8)
    arr[:, 100:200] = 200  # only the central square is bright
    path = _save(tmp_path / "wide.png", arr)
    out = decode(path, size=50)
    assert out.shape == (50, 50, 3) and out.min() == 200


def test_small_image_is_upscaled(tmp_path: Path) -> None:
    path = _save(tmp_path / "small.jpg", _galaxy(60))
    assert decode(path, size=141).shape == (141, 141, 3)


def test_truncated_jpeg_raises_naming_file(jpeg: Path, tmp_path: Path) -> None:
    data = jpeg.read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])
    for size in (None, 141):
        with pytest.raises(ImageError, match="truncated") as info:
            decode(cut, size=size)
        assert info.value.path == str(cut) and str(cut) in str(info.value)


@pytest.mark.parametrize(("content", "reason"), [(b"", "empty file"), (b"not a jpeg at all", "not an image")])
def test_unreadable_files_raise(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=reason):
        decode(path)


def test_missing_file_and_pickling(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="file not found") as info:
        decode(tmp_path / "nope.jpg")
    again = pickle.loads(pickle.dumps(info.value))  # errors cross process boundaries
    assert again.path == info.value.path and again.reason == "file not found"


def _collection(tmp_path: Path, n: int) -> list[Path | None]:
    paths: list[Path | None] = [_save(tmp_path / f"{i}.jpg", _galaxy(100, seed=i)) for i in range(n)]
    (tmp_path / "broken.jpg").write_bytes(b"")
    paths[3] = tmp_path / "broken.jpg"
    paths[5] = None
    return paths


@pytest.mark.parametrize("workers", [0, 2])
def test_iter_decoded_streams_in_order_with_failures(tmp_path: Path, workers: int) -> None:
    paths = _collection(tmp_path, 11)
    results = list(iter_decoded(paths, size=32, workers=workers, chunk=3))
    assert [item.row for item in results] == list(range(11))
    for i, image, reason, geometry in results:
        assert geometry is None  # measured only with recentring
        if i == 3:
            assert image is None and reason == "empty file"
        elif i == 5:
            assert image is None and reason == "no image path"
        else:
            assert reason is None
            np.testing.assert_array_equal(image, decode(paths[i], size=32))


def test_iter_decoded_stops_early_without_hanging(tmp_path: Path) -> None:
    paths = _collection(tmp_path, 12)
    stream = iter_decoded(paths, size=32, workers=2, chunk=2)
    first = [next(stream) for _ in range(3)]
    stream.close()  # pool shut down, queued chunks cancelled
    assert [item.row for item in first] == [0, 1, 2]


def test_load_images_zero_rows_for_failures(tmp_path: Path) -> None:
    paths = _collection(tmp_path, 7)
    images, errors, geometry = load_images(paths, size=24, workers=0, progress=False)
    assert geometry is None
    assert images.shape == (7, 24, 24, 3) and images.dtype == np.uint8
    assert errors == [(3, "empty file"), (5, "no image path")]
    assert not images[3].any() and not images[5].any() and images[0].any()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        list(iter_decoded([], chunk=0))
    with pytest.raises(ValueError):
        load_images([], size=None)  # type: ignore[arg-type]


def test_decode_workers_exit_when_the_job_is_killed(tmp_path):
    """A ``kill -9`` of a job must not leave its decode workers running."""
    import signal
    import subprocess
    import sys
    import time

    for i in range(8):
        Image.fromarray(np.full((64, 64, 3), i * 20, np.uint8)).save(tmp_path / f"{i}.jpg")
    script = (
        "import multiprocessing as mp, sys, time\n"
        "from gzmorph.data.pool import iter_decoded\n"
        f"paths = [r'{tmp_path}/%d.jpg' % (i % 8) for i in range(100000)]\n"
        "it = iter_decoded(paths, size=32, workers=2, chunk=4)\n"
        "next(it)\n"
        "print(' '.join(str(p.pid) for p in mp.active_children()), flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) == 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 20
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in pids if Path(f"/proc/{p}").exists() and "Z" not in _proc_state(p)]
    assert not alive, f"decode workers {alive} outlived their killed parent"


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except (FileNotFoundError, IndexError):
        return "Z"
