"""The study page in a real headless Chromium, served by `rglcd-study serve` (its module).

A rater answers by clicking and by keys, reloads mid-study, the server is killed and started
again; the SQLite rows and the report's counts must match what was clicked. Needs Debian's
chromium + chromium-driver (`make browser`) and selenium; skipped with the reason otherwise.
STUDY_SCREENSHOT_DIR=docs/study also writes the page's screenshots there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from orchestration.studies.human.design import QUESTION_KEYS
from tests.conftest import REPO_ROOT, free_port
from tests.helpers.study import write_tiny_eval

os.environ.setdefault("SE_OFFLINE", "true")  # selenium must never fetch a driver
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1100,1000")
AB = {"left": {"left": "a", "right": "b", "tie": "tie"},
      "right": {"left": "b", "right": "a", "tie": "tie"}}
PLAN = ["click", "keys", "click", "keys", "keys", "click", "keys", "click"]  # per screen
CHOICES = [("left", "tie", "right"), ("right", "right", "left"), ("tie", "left", "left")]
KEYS = {"left": "1", "tie": "2", "right": "3"}
STUDY = [sys.executable, "-m", "orchestration.studies.human"]  # rglcd-study


def _browser(tmp_path: Path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed: "
                                    "pip install -e '.[dev]'")
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        pytest.skip(f"no {CHROMIUM} / {CHROMEDRIVER}: run `make browser` (apt-get install "
                    "chromium chromium-driver) for the browser tier")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROME_FLAGS, f"--user-data-dir={tmp_path / 'chrome-profile'}"):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    return webdriver.Chrome(options=options, service=service)


def _run(*args: str) -> str:
    done = subprocess.run([*STUDY, *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _serve(study: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    with open(log, "a") as out:
        proc = subprocess.Popen([*STUDY, "serve", str(study), "--port", str(port)],
                                cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/api/progress?rater=r1", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        assert proc.poll() is None, log.read_text()
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"study server not up after 60 s:\n{log.read_text()}")


def _position(driver) -> tuple[int, int]:
    done, total = driver.find_element("id", "progress").text.split(" / ")
    return int(done) - 1, int(total)


def _a_side(driver) -> str:
    left = driver.find_element("id", "left-image").get_attribute("src")
    return "left" if re.search(r"_a\.png$", left) else "right"


def _answer(driver, how: str, choices: tuple[str, ...]) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    if how == "click":
        for question, choice in zip(QUESTION_KEYS, choices, strict=True):
            driver.find_element("id", f"{question}-{choice}").click()
        driver.find_element("id", "send").click()
    else:
        keys = ActionChains(driver)
        for choice in choices:
            keys.send_keys(KEYS[choice])
        keys.send_keys("\ue007").perform()  # Enter


def _wait_for(driver, test, what: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if test():
                return
        except Exception:  # the page is mid-navigation
            pass
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}; page: {driver.page_source[:500]}")


def test_rater_answers_in_chromium_and_everything_is_recorded(tmp_path):
    driver = _browser(tmp_path)
    eval_dir = write_tiny_eval(tmp_path / "eval", prompts=5)
    study = tmp_path / "study"
    _run("create", "--eval-dir", str(eval_dir), "--pairs", "good@2:poor@4", "--out", str(study),
         "--raters", "r1,r2", "--repeats", "1", "--attention", "2")
    shots = [Path(p) for p in [tmp_path, os.environ.get("STUDY_SCREENSHOT_DIR")] if p]
    log = tmp_path / "serve.log"
    proc, url = _serve(study, log)
    expected = []  # (position, item, a / b / tie per question)
    try:
        driver.get(f"{url}/?rater=r1")
        for k, how in enumerate(PLAN):
            position, total = _position(driver)
            assert (position, total) == (k, 5 + 2 + 1)
            if k == 2:  # reload mid-study: the same screen comes back
                shown = driver.find_element("id", "left-image").get_attribute("src")
                driver.refresh()
                assert _position(driver)[0] == k
                assert driver.find_element("id", "left-image").get_attribute("src") == shown
            if k == 4:  # the server dies; a new one on the same folder resumes
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
                proc, url = _serve(study, log)
                driver.get(f"{url}/?rater=r1")
                assert _position(driver)[0] == k
            item = driver.find_element("name", "item").get_attribute("value")
            side, choices = _a_side(driver), CHOICES[k % len(CHOICES)]
            if item.startswith("x"):  # attention check: the real image (A) on every question
                choices = (side,) * 3
            if k == 2:  # a screenshot with Q1 answered and Q2 highlighted
                driver.find_element("id", f"preference-{choices[0]}").click()
                for folder in shots:
                    driver.save_screenshot(str(folder / "study-page.png"))
            expected.append((k, item, tuple(AB[side][c] for c in choices)))
            _answer(driver, how, choices)
            _wait_for(driver, lambda k=k: driver.find_elements("id", "title")
                      or _position(driver)[0] == k + 1, f"screen {k + 1}")
        assert "All 8 comparisons are answered" in driver.find_element("id", "message").text
        for folder in shots:
            driver.save_screenshot(str(folder / "study-done.png"))
        driver.get(f"{url}/?rater=nobody")
        assert "unknown rater" in driver.find_element("id", "message").text
    finally:
        driver.quit()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    with sqlite3.connect(study / "answers.sqlite") as db:
        rows = db.execute(f"SELECT position, item, {', '.join(QUESTION_KEYS)} FROM answers "
                          "WHERE rater = 'r1' ORDER BY position").fetchall()
    assert [(p, i, tuple(c)) for p, i, *c in rows] == expected
    _run("report", str(study))
    report = json.loads((study / "report.json").read_text())
    firsts = {}
    for _, item, choice in expected:  # first showings of comparisons count
        if item.startswith("c"):
            firsts.setdefault(item, choice)
    for w in report["win_rates"]:
        q = QUESTION_KEYS.index(w["question"])
        counts = [sum(c[q] == x for c in firsts.values()) for x in ("a", "tie", "b")]
        assert [w["wins"], w["ties"], w["losses"]] == counts and w["n"] == 5
    (rater,) = report["raters"]
    assert rater["answered"] == 8 and rater["attention_pass_rate"] == 1.0
    assert (study / "report.png").is_file()
    if "STUDY_SCREENSHOT_DIR" in os.environ:
        shutil.copy(study / "report.png", Path(os.environ["STUDY_SCREENSHOT_DIR"]) / "report.png")
