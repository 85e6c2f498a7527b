"""Screenshot of the review page on mock galaxies (headless chromium), for the README.

Needs the `review` extra, selenium, and Debian's ``chromium`` + ``chromium-driver``
(``apt-get install chromium chromium-driver``).  Nothing is downloaded.

Example: ``python benchmarks/review_screenshot.py --out docs/review.png``
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from gzmorph.review.app import create_app
from gzmorph.review.sample import write_sample
from gzmorph.review.server import BackgroundServer, ReviewConfig, open_session


def browser(width: int, height: int) -> webdriver.Chrome:
    os.environ.setdefault("SE_OFFLINE", "true")
    binary = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver_path = shutil.which("chromedriver")
    if not (binary and driver_path):
        raise SystemExit("needs chromium and chromedriver: apt-get install chromium chromium-driver")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--hide-scrollbars"):
        opts.add_argument(arg)
    return webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=driver_path))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/review.png")
    ap.add_argument("--size", default="1280x860", help="window WIDTHxHEIGHT")
    args = ap.parse_args()
    width, height = map(int, args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        preds, images = write_sample(tmp, n=8, seed=3, size=424)
        session = open_session(ReviewConfig(predictions=preds, catalog=images, db=Path(tmp) / "review.sqlite",
                                            show_model=True))
        driver = browser(width, height)
        try:
            with BackgroundServer(create_app(session)) as server:
                driver.get(server.url + "/")
                driver.find_element(By.ID, "reviewer").send_keys("ann")
                driver.find_element(By.ID, "save").click()
                WebDriverWait(driver, 15).until(EC.presence_of_element_located((By.ID, "start"))).click()
                # One answer given, so the page shows the walk under way (Q2, with the trail).
                WebDriverWait(driver, 15).until(EC.presence_of_element_located((By.ID, "answer-Class1.2"))).click()
                WebDriverWait(driver, 15).until(EC.presence_of_element_located(
                    (By.CSS_SELECTOR, '#question-text[data-question="Q2"]')))
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                driver.save_screenshot(args.out)
        finally:
            driver.quit()
    print(f"screenshot -> {args.out}")


if __name__ == "__main__":
    main()
