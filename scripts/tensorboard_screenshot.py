"""Screenshots of TensorBoard's views of capgen runs in headless Chromium: start TensorBoard on
a folder of runs on a free port, open each view, wait until its charts or table show, save a PNG.

    python scripts/tensorboard_screenshot.py outputs/train/multirun_<time> docs/images/tensorboard
        # -> docs/images/tensorboard_custom_scalars.png, _hparams.png, _timeseries.png

Needs Debian's chromium and chromium-driver and selenium, as scripts/demo_screenshot.py. Each
PNG is reduced to 256 colours so that it stays small enough to commit. Prints one JSON line:
{view: {"screenshot", "text" (the page's text)}}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from demo_screenshot import browser, free_port, serve
from PIL import Image
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

# view: (the URL's fragment, a text the view shows once its data is in)
VIEWS = {"custom_scalars": ("custom_scalars", "val/BLEU-4"), "hparams": ("hparams", "overrides"),
         "timeseries": ("timeseries", "val")}


def start_tensorboard(logdir: Path, log: Path, timeout: float = 120) -> tuple[subprocess.Popen, str]:
    """TensorBoard on `logdir` on a free port, once its runs are loaded: (process, url)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    cmd = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--port", str(port), "--host", "127.0.0.1",
           "--load_fast=false"]
    return serve(cmd, url + "data/runs", log, "tensorboard", timeout, ready=lambda answer: bool(json.load(answer))), url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("logdir", type=Path, help="a folder of capgen runs (a sweep's folder, outputs/train, ...)")
    parser.add_argument("out", type=Path, help="the PNGs' path without the view's name and .png")
    parser.add_argument("--views", default=",".join(VIEWS), help=f"any of {', '.join(VIEWS)}")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--settle", type=float, default=4.0, help="seconds to let the charts draw once the data shows")
    opts = parser.parse_args()
    views = opts.views.split(",")
    if unknown := [v for v in views if v not in VIEWS]:
        parser.error(f"--views: unknown {unknown}; choose from {', '.join(VIEWS)}")

    shots = {}
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_tensorboard(opts.logdir, Path(tmp) / "tensorboard.log")
        driver = None
        try:
            driver = browser(Path(tmp) / "profile", opts.width, opts.height)
            for view in views:
                fragment, shown = VIEWS[view]
                driver.get(f"{url}#{fragment}")
                WebDriverWait(driver, 120).until(lambda d: shown in d.find_element(By.TAG_NAME, "body").text)
                time.sleep(opts.settle)
                png = Path(tmp) / f"{view}.png"
                driver.save_screenshot(str(png))
                out = opts.out.with_name(f"{opts.out.name}_{view}.png")
                out.parent.mkdir(parents=True, exist_ok=True)
                Image.open(png).convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE).save(out, optimize=True)
                shots[view] = {"screenshot": str(out), "text": driver.find_element(By.TAG_NAME, "body").text}
        finally:
            if driver is not None:
                driver.quit()
            proc.terminate()
            proc.wait(30)
    print(json.dumps(shots))


if __name__ == "__main__":
    main()
