"""A screenshot of capgen-demo's page in headless Chromium: start the demo on a free port,
pick the first example, press Caption, wait for every checkpoint's caption, save a PNG.

    python scripts/demo_screenshot.py docs/images/demo.png ckpt_path=<lstm ckpt>,<attn ckpt> [capgen-demo settings]
    python scripts/demo_screenshot.py shot.png --url http://127.0.0.1:7860/    # a capgen-demo already running

Needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver) and
selenium (in the test extra). The PNG is the whole page, `--width` pixels wide, reduced to
256 colours so that it stays small enough to commit. Prints one JSON line: {"screenshot",
"captions" (each checkpoint's, as the page shows it), "text" (all of the page's text)}.
tests/e2e/demo/test_demo_page.py runs it on tiny checkpoints; the README's picture is its output on
trained shapes runs.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from PIL import Image
from selenium import webdriver
from selenium.common.exceptions import (
    ElementClickInterceptedException,
    ElementNotInteractableException,
    NoSuchElementException,
    StaleElementReferenceException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# No network is needed, nor wanted: without these, Chromium's background services keep trying to reach theirs.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(cmd: list[str], url: str, log: Path, name: str, timeout: float = 180,
          ready=lambda answer: True) -> subprocess.Popen:
    """Start `cmd` (its output to `log`) and wait until `url` answers and `ready(answer)` holds;
    the process, in its own process group (whoever ends it ends whatever it started)."""
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited with status {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                if ready(answer):
                    return proc
        except OSError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"{name} did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def start_demo(args: list[str], log: Path, timeout: float = 180) -> tuple[subprocess.Popen, str]:
    """capgen-demo with `args` on a free port, once its page answers: (process, url)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    return serve([sys.executable, "-m", "capgen.cli.demo", *args, f"port={port}"], url, log, "capgen-demo", timeout), url


def browser(profile: Path, width: int, height: int) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"]:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def clicked(by: str, selector: str):
    """A wait condition: the first element `selector` finds, clicked once it takes clicks (a page
    still laying itself out answers "not interactable" or "click intercepted" for a moment)."""

    def click(driver: webdriver.Chrome) -> bool:
        try:
            driver.find_element(by, selector).click()
            return True
        except (NoSuchElementException, ElementNotInteractableException, ElementClickInterceptedException,
                StaleElementReferenceException):
            return False

    return click


def caption_first_example(driver: webdriver.Chrome, url: str, timeout: float = 120) -> list[str]:
    """Load the page, pick its first example, press Caption; the captions once every column shows one."""
    driver.get(url)
    wait = WebDriverWait(driver, timeout)
    columns = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".capgen-column"))
    wait.until(clicked(By.CSS_SELECTOR, ".capgen-examples button.gallery-item"))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".capgen-picture img"))  # the input shows the example
    wait.until(clicked(By.XPATH, "//button[normalize-space()='Caption']"))
    wait.until(lambda d: len([e for e in d.find_elements(By.CSS_SELECTOR, ".capgen-text") if e.text]) == len(columns))
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".capgen-text")]


def whole_page_loaded(driver: webdriver.Chrome, width: int, timeout: float = 60) -> None:
    """The viewport made as tall as the page (so the screenshot holds all of it, and the pictures
    gradio loads only once they are in view, loading=lazy, load), and those pictures waited for."""
    height = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]["height"]
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": int(height), "deviceScaleFactor": 1, "mobile": False})
    WebDriverWait(driver, timeout).until(lambda d: d.execute_script(
        "return Array.from(document.images).filter(i => i.getClientRects().length > 0)"  # shown, not in a closed accordion
        ".every(i => i.complete && i.naturalWidth > 0)"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("args", nargs="*", help="capgen-demo's settings, e.g. ckpt_path=a.ckpt,b.ckpt (started on a "
                                                "free port and stopped at the end)")
    parser.add_argument("--url", help="instead: the page of a capgen-demo that is running")
    parser.add_argument("--width", type=int, default=1400, help="browser window width (also the PNG's)")
    opts = parser.parse_args()
    if bool(opts.url) == bool(opts.args):
        parser.error("give either capgen-demo's settings or --url")

    with tempfile.TemporaryDirectory() as tmp:
        proc, url = (None, opts.url) if opts.url else start_demo(opts.args, Path(tmp) / "demo.log")
        driver = None
        try:
            driver = browser(Path(tmp) / "profile", opts.width, 1000)
            captions = caption_first_example(driver, url)
            whole_page_loaded(driver, opts.width)
            driver.save_screenshot(str(Path(tmp) / "full.png"))
            text = driver.find_element(By.TAG_NAME, "body").text
        finally:
            if driver is not None:
                driver.quit()
            if proc is not None:
                proc.terminate()
                proc.wait(30)
        opts.out.parent.mkdir(parents=True, exist_ok=True)
        Image.open(Path(tmp) / "full.png").convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE).save(
            opts.out, optimize=True)
    print(json.dumps({"screenshot": str(opts.out), "captions": captions, "text": text}))


if __name__ == "__main__":
    main()
