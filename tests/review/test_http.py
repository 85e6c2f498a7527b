"""The review web application over HTTP: the flow, and every refusal (token, CSRF, paths, tree)."""

import pytest
from starlette.testclient import TestClient

from gzmorph.review.app import create_app
from gzmorph.review.server import ReviewConfig, open_session
from review_helpers import csrf_of, sample

TOKEN = "s3cret-token-for-tests-0123456789"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("review_http")
    preds, images = sample(root)
    return preds, images, root


BASE = "http://127.0.0.1:8000"  # a bound host name: the host guard refuses others


def make_client(setup, db_name="r.sqlite", **kw) -> tuple[TestClient, object]:
    preds, images, root = setup
    session = open_session(ReviewConfig(predictions=preds, catalog=images, db=root / db_name, **kw))
    return TestClient(create_app(session), base_url=BASE, follow_redirects=False), session


def login(client: TestClient, name: str = "ann") -> str:
    csrf = csrf_of(client.get("/").text)
    r = client.post("/settings", data={"csrf": csrf, "reviewer": name, "question": ""})
    assert r.status_code == 303
    return csrf


def test_review_flow_and_resume_after_restart(setup):
    client, session = make_client(setup, "flow.sqlite")
    csrf = login(client)
    first = session.predictions.index[0]
    r = client.get("/next")
    assert r.status_code == 303 and r.headers["location"].startswith("/galaxy/")
    gid = r.headers["location"].rsplit("/", 1)[1]
    page = client.get(f"/galaxy/{gid}")
    assert page.status_code == 200 and 'data-question="Q1"' in page.text and "Class1.1" in page.text
    r = client.post(f"/galaxy/{gid}/answer", data={"csrf": csrf, "question": "Q1", "answer": "Class1.1"})
    assert r.headers["location"] == f"/galaxy/{gid}?q=Q7"
    assert session.store.answers(gid, "ann") == {"Q1": "Class1.1"}
    # Restart: a new app on the same database resumes the unfinished galaxy.
    client2, _ = make_client(setup, "flow.sqlite")
    client2.cookies.update(client.cookies)
    assert client2.get("/next").headers["location"] == f"/galaxy/{gid}"
    assert 'data-question="Q7"' in client2.get(f"/galaxy/{gid}").text
    assert first in session.predictions.index


def test_probabilities_are_shown_only_when_asked(setup):
    client, _ = make_client(setup, "probs.sqlite")
    csrf = login(client)
    gid = client.get("/next").headers["location"].rsplit("/", 1)[1]
    assert 'class="prob"' not in client.get(f"/galaxy/{gid}").text
    client.post("/settings", data={"csrf": csrf, "reviewer": "ann", "question": "", "show_model": "1"})
    assert 'class="prob"' in client.get(f"/galaxy/{gid}").text


def test_unreached_question_and_foreign_answer_are_refused(setup):
    client, session = make_client(setup, "tree.sqlite")
    csrf = login(client)
    gid = session.predictions.index[0]
    r = client.post(f"/galaxy/{gid}/answer", data={"csrf": csrf, "question": "Q2", "answer": "Class2.1"})
    assert r.status_code == 422 and "not reached" in r.text
    r = client.post(f"/galaxy/{gid}/answer", data={"csrf": csrf, "question": "Q1", "answer": "Class9.9"})
    assert r.status_code == 422
    assert client.get(f"/galaxy/{gid}?q=Q2").status_code == 404
    assert session.store.table().empty


def test_bad_or_missing_csrf_is_refused(setup):
    client, session = make_client(setup, "csrf.sqlite")
    login(client)
    gid = session.predictions.index[0]
    for data in ({"question": "Q1", "answer": "Class1.1"}, {"csrf": "0" * 64, "question": "Q1", "answer": "Class1.1"}):
        assert client.post(f"/galaxy/{gid}/answer", data=data).status_code == 403
        assert client.post(f"/galaxy/{gid}/skip", data=data).status_code == 403
    # A token from another browser session does not fit this one.
    other = TestClient(client.app, base_url=BASE, follow_redirects=False)
    foreign = csrf_of(other.get("/").text)
    assert client.post(f"/galaxy/{gid}/answer", data={"csrf": foreign, "question": "Q1",
                                                      "answer": "Class1.1"}).status_code == 403
    assert session.store.table().empty


@pytest.mark.parametrize("path", ["/image/..%2F..%2F..%2Fetc%2Fpasswd", "/image/../../etc/passwd",
                                  "/image/%2Fetc%2Fpasswd", "/image/999999", "/static/..%2F..%2Fdb.py",
                                  "/galaxy/..%2Fr.sqlite"])
def test_no_file_outside_the_catalog_is_served(setup, path):
    client, _ = make_client(setup, "paths.sqlite")
    r = client.get(path)
    assert r.status_code == 404 and b"root:" not in r.content


def test_images_are_served_by_id(setup):
    client, session = make_client(setup, "img.sqlite")
    gid = session.predictions.index[0]
    r = client.get(f"/image/{gid}")
    assert r.status_code == 200 and r.content[:2] == b"\xff\xd8"  # a JPEG


def test_any_other_host_needs_a_token(setup, monkeypatch):
    preds, images, root = setup
    monkeypatch.delenv("GZMORPH_REVIEW_TOKEN", raising=False)
    with pytest.raises(ValueError, match="--token"):
        ReviewConfig(predictions=preds, catalog=images, db=root / "t.sqlite", host="0.0.0.0")
    monkeypatch.setenv("GZMORPH_REVIEW_TOKEN", TOKEN)
    assert ReviewConfig(predictions=preds, catalog=images, db=root / "t.sqlite", host="0.0.0.0").token == TOKEN


def test_every_request_needs_the_token(setup):
    client, session = make_client(setup, "token.sqlite", host="0.0.0.0", token=TOKEN)
    gid = session.predictions.index[0]
    for path in ("/", f"/image/{gid}", "/static/review.js", "/next"):
        assert client.get(path).status_code == 403
        assert client.get(path, headers={"Authorization": "Bearer wrong-token-wrong-token"}).status_code == 403
    assert client.get(f"/?token={TOKEN[:-1]}x").status_code == 403
    assert client.post("/settings", data={"reviewer": "x"}).status_code == 403
    assert client.get(f"/image/{gid}", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    r = client.get(f"/?token={TOKEN}")
    assert r.status_code == 303 and r.headers["location"] == "/" and "gzmorph_token" in r.headers["set-cookie"]
    assert client.get("/").status_code == 200  # the cookie now carries it
