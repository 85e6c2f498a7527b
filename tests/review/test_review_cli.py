"""`gzmorph review` as a process: it serves the queue, and a SIGKILL loses no given answer."""

import re
import signal
import socket
import subprocess
import sys
import time

import httpx2 as httpx  # the maintained httpx line, which Starlette's test client uses
import pytest

from gzmorph.cli import main
from gzmorph.review.db import ReviewStore
from review_helpers import csrf_of, sample


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120  # bounded; importing torch and pandas on a loaded 2-core machine is slow
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited: {proc.stderr.read().decode()}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("the server did not answer within 120 s")


@pytest.mark.slow
def test_served_queue_and_kill_mid_review(tmp_path, monkeypatch):
    monkeypatch.delenv("GZMORPH_REVIEW_TOKEN", raising=False)
    preds, images = sample(tmp_path)
    db, port = tmp_path / "review.sqlite", free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gzmorph", "review", "--predictions", str(preds), "--images",
                             str(images), "--db", str(db), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_up(url + "/", proc)
        with httpx.Client(base_url=url) as client:
            page = client.get("/").text
            assert "6 flagged galaxies" in page and len(re.findall(r'href="/galaxy/\d+"', page)) == 6
            csrf = csrf_of(page)
            client.post("/settings", data={"csrf": csrf, "reviewer": "ann", "question": ""})
            gid = client.get("/next").headers["location"].rsplit("/", 1)[1]
            r = client.post(f"/galaxy/{gid}/answer", data={"csrf": csrf, "question": "Q1", "answer": "Class1.2"})
            assert r.status_code == 303
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert ReviewStore.open_existing(db).answers(gid, "ann") == {"Q1": "Class1.2"}
    assert main(["review", "export", "--db", str(db), "--out", str(tmp_path / "labels.csv")]) == 0
    assert main(["review", "--predictions", str(preds), "--images", str(images), "--db", str(db),
                 "--host", "0.0.0.0"]) == 2  # refused without a token, before binding anything
