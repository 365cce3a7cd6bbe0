"""The ops report in a real browser: Debian's Chromium, headless, driven by Selenium.

The page is opened from a file:// URL, as an operator would open it from a laptop.  Skips
with the reason when Chromium or chromedriver is absent.  The screenshot lands in
``artifacts/`` at the repository root (gitignored), or in $OPS_ARTIFACTS.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ops.cli import main
from tests.ops_world import BAD, CLIP, OK_FRAMES, REUPLOADED, World, build_world

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
REPO = Path(__file__).resolve().parents[2]
XSS_KEY = next(k for k in OK_FRAMES if "<script>" in k)
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")

pytestmark = [pytest.mark.ops, pytest.mark.skipif(
    not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()),
    reason="needs /usr/bin/chromium and /usr/bin/chromedriver (Debian: apt-get install chromium chromium-driver)")]


@pytest.fixture(scope="module")
def world_report(s3_client: Any, s3_settings: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[World, Path]:
    tmp = tmp_path_factory.mktemp("ops-report")
    world: World = build_world(s3_client, f"ops-browser-{os.getpid()}", s3_settings, tmp)
    assert main(world.argv("report", "--out", str(tmp / "site"), "--older-than", "0s", cache=tmp / "cache")) == 0
    return world, tmp / "site" / "index.html"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    pytest.importorskip("selenium", reason="needs selenium (the dev extra)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.add_argument("--window-size=1280,900")
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _visible(driver: Any) -> list[Any]:
    return [c for c in driver.find_elements("css selector", "#gallery .card") if c.is_displayed()]


def _visible_keys(driver: Any) -> set[str]:
    return {c.find_element("css selector", ".key").text for c in _visible(driver)}


def _choose(driver: Any, select_id: str, value: str) -> None:
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("id", select_id)).select_by_value(value)


def _screenshot(driver: Any, name: str) -> Path:
    folder = Path(os.environ.get("OPS_ARTIFACTS", REPO / "artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    width, height = driver.execute_script(
        "return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "captureBeyondViewport": True, "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}})
    path = folder / name
    path.write_bytes(base64.b64decode(shot["data"]))
    print(f"\nops report screenshot: {path}")
    return path


def test_report_renders_filters_and_escapes(world_report: tuple[World, Path], browser: Any) -> None:
    world, report = world_report
    browser.get(report.as_uri())
    assert browser.find_element("css selector", "html").get_attribute("data-ready") == "1"  # our script ran
    cards = browser.find_elements("css selector", "#gallery .card")
    frame_keys = {*OK_FRAMES, REUPLOADED, BAD}
    assert {c.find_element("css selector", ".key").text for c in cards} == frame_keys
    assert len(_visible(browser)) == len(frame_keys)
    thumbs = browser.find_elements("css selector", "#gallery .card img")
    assert len(thumbs) == len(frame_keys) - 2 and all(  # not the broken file, nor the re-uploaded frame
        browser.execute_script("return arguments[0].naturalWidth", img) == 160 for img in thumbs)
    again = next(c for c in cards if c.find_element("css selector", ".key").text == REUPLOADED)
    assert "re-uploaded since" in again.text
    # What each filter must leave visible, from the result documents rather than from the page.
    docs = {k: world.store.get_json(f"results/{k.removeprefix('incoming/')}.json") for k in frame_keys}
    cars = {k for k, d in docs.items() if d.get("label") == "car"}
    confident = {k for k, d in docs.items() if d.get("probability") is not None and round(d["probability"], 4) >= 0.9}
    assert {"incoming/cam1/0001.jpg", "incoming/cam2/0001.jpg"} <= cars < frame_keys  # red is a car, blue is not
    assert confident and "incoming/cam2/0002.jpg" not in confident and BAD not in confident

    _choose(browser, "f-camera", "cam1")
    assert {c.get_attribute("data-camera") for c in _visible(browser)} == {"cam1"}
    assert len(_visible(browser)) == 3
    assert _visible_keys(browser) == {"incoming/cam1/0001.jpg", "incoming/cam1/0002.jpg", XSS_KEY}
    _choose(browser, "f-camera", "")
    _choose(browser, "f-status", "error")
    assert [c.find_element("css selector", ".key").text for c in _visible(browser)] == [BAD]
    assert _visible_keys(browser) == {BAD}
    _choose(browser, "f-status", "")
    _choose(browser, "f-label", "car")
    assert {c.get_attribute("data-label") for c in _visible(browser)} == {"car"}
    assert _visible_keys(browser) == cars
    _choose(browser, "f-label", "")
    slider = browser.find_element("id", "f-conf")
    browser.execute_script("arguments[0].value = '0.9'; arguments[0].dispatchEvent(new Event('input'))", slider)
    assert all(float(c.get_attribute("data-p")) >= 0.9 for c in _visible(browser))
    assert "incoming/cam2/0002.jpg" not in {c.find_element("css selector", ".key").text for c in _visible(browser)}
    assert browser.find_element("id", "visible-count").text == str(len(_visible(browser)))
    assert _visible_keys(browser) == confident
    assert browser.find_element("id", "visible-count").text == str(len(confident))
    browser.execute_script("arguments[0].value = '0'; arguments[0].dispatchEvent(new Event('input'))", slider)
    assert _visible_keys(browser) == frame_keys  # every filter off again: every card back

    # The key with markup in it is text on the page, and its script never ran.
    assert XSS_KEY in browser.find_element("id", "gallery").text
    assert browser.execute_script("return typeof window.__xss") == "undefined"
    assert len(browser.find_elements("css selector", "#gallery script")) == 0

    assert browser.find_elements("css selector", ".chart svg rect"), "no label-share chart"
    clip = browser.find_element("css selector", ".clip")
    assert CLIP in clip.text and len(clip.find_elements("css selector", "svg.strip rect")) == 2
    assert "annotated.mp4" in clip.find_element("link text", "annotated mp4").get_attribute("href")
    assert BAD in browser.find_element("id", "error-table").text
    assert "NotAnImageError" in browser.find_element("id", "error-table").text
    missing = browser.find_element("id", "missing-table").text
    assert "incoming/cam1/lost.jpg" in missing and REUPLOADED in missing
    assert _screenshot(browser, "ops-report.png").stat().st_size > 10_000
