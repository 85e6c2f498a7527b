"""A reviewer in a real headless browser (Debian's chromium + chromium-driver, Selenium).

Skipped, with the reason, where chromium, chromedriver or the Python packages are
missing; CI (.ci/run) installs them.
"""

import os
import shutil

import pytest

webdriver = pytest.importorskip("selenium.webdriver")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from gzmorph.review.app import create_app  # noqa: E402
from gzmorph.review.export import export_labels  # noqa: E402
from gzmorph.review.server import BackgroundServer, ReviewConfig, open_session  # noqa: E402
from review_helpers import sample  # noqa: E402

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="needs chromium and chromedriver (apt-get install chromium chromium-driver)")]


def start_browser():
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download a driver
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,900"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    return driver


@pytest.fixture(scope="module")
def review(tmp_path_factory):
    root = tmp_path_factory.mktemp("review_browser")
    preds, images = sample(root)
    session = open_session(ReviewConfig(predictions=preds, catalog=images, db=root / "review.sqlite"))
    driver = start_browser()
    try:
        with BackgroundServer(create_app(session)) as server:
            yield server.url, driver, session, root
    finally:
        driver.quit()


def wait_for_question(driver, name: str) -> None:
    WebDriverWait(driver, 15).until(
        EC.presence_of_element_located((By.CSS_SELECTOR, f'#question-text[data-question="{name}"]')))


def press(driver, key: str) -> None:
    driver.find_element(By.TAG_NAME, "body").send_keys(key)


def sign_in(driver, url: str, name: str) -> None:
    driver.delete_all_cookies()
    driver.get(url + "/")
    field = driver.find_element(By.ID, "reviewer")
    field.clear()
    field.send_keys(name)
    driver.find_element(By.ID, "save").click()
    WebDriverWait(driver, 15).until(EC.text_to_be_present_in_element((By.ID, "reviewer-name"), name))
    driver.find_element(By.ID, "start").click()
    wait_for_question(driver, "Q1")


def test_two_reviewers_by_clicks_and_keys(review):
    url, driver, session, root = review
    sign_in(driver, url, "ann")
    gid = driver.current_url.rsplit("/", 1)[1]
    img = driver.find_element(By.ID, "galaxy-image")
    assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) == 64
    # The view tools, by key and by click.
    press(driver, "i")
    assert "invert" in img.get_attribute("style")
    driver.find_element(By.ID, "zoom-in").click()
    assert "scale(1.5)" in img.get_attribute("style")
    # ann answers by clicks: smooth -> Q7 in between -> back -> cigar -> Q6 no.
    driver.find_element(By.ID, "answer-Class1.1").click()
    wait_for_question(driver, "Q7")
    driver.find_element(By.ID, "answer-Class7.2").click()
    wait_for_question(driver, "Q6")
    driver.find_element(By.ID, "back").click()
    wait_for_question(driver, "Q7")
    assert "chosen" in driver.find_element(By.ID, "answer-Class7.2").get_attribute("class")
    driver.find_element(By.ID, "answer-Class7.3").click()
    wait_for_question(driver, "Q6")
    driver.find_element(By.ID, "answer-Class6.2").click()
    wait_for_question(driver, "Q1")  # on to the next galaxy of the queue
    assert driver.current_url.rsplit("/", 1)[1] != gid
    assert session.store.answers(gid, "ann") == {"Q1": "Class1.1", "Q7": "Class7.3", "Q6": "Class6.2"}

    # bob answers the same galaxy with the keyboard: disk, not edge-on, no bar, no spiral, obvious bulge, odd: no.
    sign_in(driver, url, "bob")
    assert driver.current_url.rsplit("/", 1)[1] == gid
    for key, nxt in (("2", "Q2"), ("2", "Q3"), ("2", "Q4"), ("2", "Q5"), ("3", "Q6")):
        press(driver, key)
        wait_for_question(driver, nxt)
    press(driver, "2")
    WebDriverWait(driver, 15).until(lambda d: d.current_url.rsplit("/", 1)[1] != gid)
    # Under load the last answer's request can still be in flight when the next page shows.
    WebDriverWait(driver, 15).until(lambda d: len(session.store.answers(gid, "bob")) >= 6)
    rows = session.store.table()
    assert len(rows[(rows["galaxy"] == gid) & (rows["reviewer"] == "bob")]) == 6
    assert set(rows["model_version"]) == {session.model_version}

    labels = export_labels(root / "review.sqlite", root / "labels.csv").set_index("GalaxyID").loc[int(gid)]
    expected = {"Class1.1": 0.5, "Class1.2": 0.5, "Class7.3": 0.5, "Class2.2": 0.5, "Class3.2": 0.5,
                "Class4.2": 0.5, "Class5.3": 0.5, "Class6.2": 1.0, "Class6.1": 0.0}
    assert {k: labels[k] for k in expected} == pytest.approx(expected)
    assert labels["Q1_votes"] == 2 and labels["n_reviewers"] == 2
    assert labels[["Class8.1", "Class9.1", "Class10.1"]].isna().all()  # nobody reached them


def test_skip_and_cant_tell_by_keys(review):
    url, driver, session, _ = review
    sign_in(driver, url, "cy")
    first = driver.current_url.rsplit("/", 1)[1]
    press(driver, "s")  # skip the galaxy
    WebDriverWait(driver, 15).until(lambda d: d.current_url.rsplit("/", 1)[1] != first)
    wait_for_question(driver, "Q1")
    gid = driver.current_url.rsplit("/", 1)[1]
    press(driver, "0")  # can't tell: no follow-up question, on to Q6
    wait_for_question(driver, "Q6")
    assert session.store.answers(gid, "cy") == {"Q1": "?"}
    assert first in session.store.finished("cy")
