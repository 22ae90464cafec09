"""The web app in a real browser (Debian's chromium, driven by Selenium): upload a query, see
results with thumbnails, open the viewer at the match, seek one video and watch the other follow,
and review duplicates; on a library whose episodes share an intro, see common footage marked.
Screenshots of each page are saved under the test's temporary folder."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from helpers import SERIES_THRESHOLD, transcode, write_video

pytest.importorskip("fastapi", reason="the `serve` extra is not installed")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="chromium and chromium-driver are not installed"),
]

#: where the screenshots go (a test artefact; CI may keep the folder)
SHOTS = Path(os.environ.get("VIDSEARCH_SCREENSHOTS", "")) if os.environ.get("VIDSEARCH_SCREENSHOTS") else None


@pytest.fixture(scope="module")
def server(tmp_path_factory, vs):
    root = tmp_path_factory.mktemp("browser")
    videos = root / "videos"
    videos.mkdir()
    write_video(videos / "beach.mp4", seconds=10, fps=25, size=(320, 192), seed=41)
    write_video(videos / "city.mp4", seconds=8, fps=25, size=(320, 192), seed=42)
    write_video(videos / "forest.mkv", seconds=6, fps=24, size=(256, 160), seed=43, codec="mpeg4")
    transcode(videos / "beach.mp4", videos / "beach-small.mp4", size=(192, 112))
    idx = root / "idx"
    assert vs.index(videos, idx).exit_code == 0
    query = transcode(videos / "beach.mp4", root / "query.mp4", start_s=3.3, end_s=8.3, size=(240, 144))
    with serving(idx, vs.model) as url:
        yield url, query, root


@contextlib.contextmanager
def serving(idx: Path, model: Path):
    """The app over ``idx`` on a free loopback port, in a thread: its URL."""
    import uvicorn

    from vidsearch.server.app import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(idx, model=str(model))
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        "--autoplay-policy=no-user-gesture-required",
        "--mute-audio",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def wait_for(driver, script: str, timeout: float = 60, what: str = ""):
    """Poll a JavaScript expression until it is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(f"return ({script});")
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or script}")


def shot(driver, tmp_dir: Path, name: str) -> Path:
    path = tmp_dir / f"{name}.png"
    driver.save_screenshot(str(path))
    if SHOTS:
        SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, SHOTS / path.name)
    return path


def test_search_viewer_and_duplicates_in_a_real_browser(server, browser):
    url, query, root = server
    browser.get(url + "/#search")
    browser.find_element("id", "file").send_keys(str(query))
    browser.find_element("id", "upload-go").click()
    wait_for(browser, "document.querySelectorAll('.result').length >= 2", what="results")
    # thumbnails: every image of the first result loaded from the server
    wait_for(
        browser,
        "[...document.querySelectorAll('.result:first-child img')].every(i => i.complete && i.naturalWidth > 0)",
        what="thumbnails",
    )
    first = browser.execute_script("return document.querySelector('.result h3').textContent")
    assert "beach" in first
    assert "query 0:00–0:0" in browser.find_element("css selector", ".segment-line").text
    shot(browser, root, "search")

    # the viewer opens at the match; the library side starts within 0.5 s of the segment's start
    browser.find_element("css selector", ".result .open-viewer").click()
    wait_for(browser, "!document.querySelector('#page-viewer').hidden", what="the viewer")
    wait_for(
        browser,
        "document.querySelector('#left').readyState >= 1 && document.querySelector('#right').readyState >= 1",
        what="both videos",
    )
    expected = browser.execute_script("return window.vidsearchView.start")
    assert 2.0 <= expected["right"] <= 4.5  # the query was cut from 3.3 s
    right = wait_for(browser, "document.querySelector('#right').currentTime + 1e-9", what="right time")
    assert abs(right - expected["right"]) <= 0.5, (right, expected)
    left = browser.execute_script("return document.querySelector('#left').currentTime")
    assert abs(left - expected["left"]) <= 0.5, (left, expected)
    shot(browser, root, "viewer")

    # seeking one moves the other, keeping the offset
    offset = expected["right"] - expected["left"]
    browser.execute_script("document.querySelector('#left').currentTime = 1.0")
    wait_for(
        browser,
        f"Math.abs(document.querySelector('#right').currentTime - {1.0 + offset}) < 0.3",
        what="the right video to follow a seek of the left",
    )
    browser.execute_script(f"document.querySelector('#right').currentTime = {2.0 + offset}")
    wait_for(
        browser,
        "Math.abs(document.querySelector('#left').currentTime - 2.0) < 0.3",
        what="the left video to follow a seek of the right",
    )

    # duplicates: the re-encoded copy is grouped with its source; the keeper is the larger one
    browser.get(url + "/#dupes")
    wait_for(browser, "document.querySelectorAll('.group').length >= 1", what="duplicate groups")
    text = browser.find_element("css selector", ".group").text
    assert "beach.mp4" in text and "beach-small.mp4" in text and "suggested keeper" in text
    shot(browser, root, "dupes")

    # open the pair in the viewer, judge it not a match: it leaves the duplicates page
    browser.find_element("xpath", "//article[contains(@class,'group')]//button[text()='Open']").click()
    wait_for(browser, "!document.querySelector('#page-viewer').hidden", what="the viewer for the pair")
    wait_for(browser, "!document.querySelector('#verdict-not').disabled", what="verdict buttons")
    browser.find_element("id", "verdict-not").click()
    wait_for(browser, "document.querySelector('#verdict-status').textContent.startsWith('recorded')")
    browser.get(url + "/#dupes")
    wait_for(browser, "document.querySelector('#dupes-status').textContent.includes('decided pairs hidden')")
    assert browser.find_elements("css selector", ".group") == []

    browser.get(url + "/#library")
    wait_for(browser, "document.querySelector('#library-stats').textContent.includes('videos indexed')")
    assert "4" in browser.find_element("id", "library-stats").text
    shot(browser, root, "library")


def test_common_footage_is_marked_in_a_real_browser(series_library, vs, browser):
    idx, videos, _ = series_library
    with serving(idx, vs.model) as url:
        # the duplicates pass stores the shared intro as common; the one real pair lists it apart
        browser.get(url + "/#search")
        browser.execute_script(
            f"document.querySelector('#dupes-threshold').value = '{SERIES_THRESHOLD}'; location.hash = '#dupes'"
        )
        wait_for(browser, "document.querySelectorAll('.group').length === 1", what="the duplicate group")
        assert (
            "common footage 0:00–0:04 here ↔ 0:00–0:04 in the keeper"
            in browser.find_element("css selector", ".group .common-segments").text
        )
        shot(browser, idx.parent, "dupes-common")

        # the pair's viewer draws the intro in grey on both scrubbers, apart from the matched footage
        browser.find_element("xpath", "//article[contains(@class,'group')]//button[text()='Open']").click()
        wait_for(browser, "!document.querySelector('#page-viewer').hidden", what="the viewer for the pair")
        wait_for(browser, "document.querySelectorAll('#right-scrub .seg').length >= 2", what="the scrubbers")
        for side in ("left", "right"):
            marks = browser.execute_script(
                f"return [...document.querySelectorAll('#{side}-scrub .seg')]"
                ".map((m) => [m.classList.contains('common'), parseFloat(m.style.left)])"
            )
            assert [left for common, left in marks if common] == [0.0], (side, marks)
            assert [left for common, left in marks if not common] and all(
                left > 0 for common, left in marks if not common
            ), (side, marks)
        assert "common footage 0:00–0:04 ↔ 0:00–0:04" in browser.find_element("id", "viewer-title").text
        shot(browser, idx.parent, "viewer-common")

        # search by episode 3 from 2 s: its copy matches on the episode's own footage, first and
        # unmarked, its intro listed apart; the other episodes match on the intro alone, after it
        wait_for(browser, "document.querySelectorAll('#video-list option').length === 13", what="the video list")
        browser.execute_script("location.hash = '#search'")
        browser.find_element("id", "range-video").send_keys(str(videos / "ep03.mp4"))
        browser.find_element("id", "range-start").send_keys("2")
        browser.find_element("id", "range-end").send_keys("8")
        browser.find_element("id", "range-go").click()
        wait_for(browser, "document.querySelectorAll('.result').length === 10", what="results")
        mark = "common footage: appears in 13 videos"
        cards = browser.find_elements("css selector", ".result")
        first, last = (c.find_element("css selector", "h3").text for c in (cards[0], cards[-1]))
        assert first == f"1. {videos / 'ep03-copy.mp4'}"
        assert mark in cards[0].find_element("css selector", ".common-segments").text
        assert last.startswith("10. ") and last.endswith(f".mp4 {mark}")
        flags = browser.execute_script(
            "return [...document.querySelectorAll('.result')].map((c) => c.classList.contains('common'))"
        )
        assert flags == sorted(flags) and flags[-1], flags
        shot(browser, idx.parent, "search-common")
