"""Starting capgen-demo: check the settings, load every checkpoint, draw the examples,
build the page and serve it (gradio, imported only here so that the rest of capgen runs
without the `demo` extra)."""

from __future__ import annotations

import errno
import logging
import os
import socket
import sys
import time
from pathlib import Path

from omegaconf import DictConfig

from ...config.checks import check_numbers, check_values
from ...lightning.inference import resolve_device
from ..failure import one_paragraph_on_failure
from .served import checkpoint_paths, example_pictures, load_served_models

log = logging.getLogger(__name__)

DEFAULT_PORT = 7860  # gradio's; with port=null the first free one from here
POSITIVE_SETTINGS = {"figure_size": 320, "gif_frame_ms": 800, "examples": 6}  # and an example value of each


def check_demo_config(cfg: DictConfig) -> None:
    """Raise a ValueError naming the first setting of capgen-demo's own that is wrong."""
    check_numbers(cfg)
    check_values(cfg, {"server_name": str, "port": int | None, "image_size": int | None})
    for key in POSITIVE_SETTINGS:
        value = cfg.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key}={value}: give a positive whole number, e.g. {key}={POSITIVE_SETTINGS[key]}")
    if cfg.port is not None and not 1 <= cfg.port <= 65535:
        raise ValueError(f"port={cfg.port}: give a TCP port from 1 to 65535, or port=null for the first free one from "
                         f"{DEFAULT_PORT}")


def check_address(host: str, port: int | None) -> None:
    """Raise a ValueError when `host` is no address of this machine, or `port` on it cannot be
    listened on (taken by another program), before gradio's own less direct messages."""
    server = f"server_name={host}: not an address of this machine"
    fix = "give server_name=127.0.0.1 (this machine only) or server_name=0.0.0.0 (every network it is on)"
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port or 0, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        raise ValueError(f"{server} ({e.strerror}); {fix}") from None
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind(address)
        except OSError as e:
            other = f"give another port=, or port=null for the first free one from {DEFAULT_PORT}"
            if e.errno == errno.EADDRINUSE:
                raise ValueError(f"port={port}: {host}:{port} cannot be served on ({e.strerror}: another program, "
                                 f"perhaps another capgen-demo, listens there); {other}") from None
            if e.errno == errno.EACCES:
                raise ValueError(f"port={port}: {host}:{port} cannot be served on ({e.strerror}: ports below 1024 need "
                                 f"administrator rights); {other}") from None
            raise ValueError(f"{server} ({e.strerror}); {fix}") from None


def require_gradio():
    """The gradio module, or an ImportError that says how to install it."""
    try:
        import gradio
    except ImportError as e:
        raise ImportError(f"capgen-demo needs gradio, which is not installed here ({e}); install it with "
                          "pip install 'capgen[demo]' (from a checkout: pip install -e \".[demo]\")") from None
    return gradio


def serve(cfg: DictConfig):
    """Load, build and start the page (in the background); returns the running gradio app."""
    # The quick checks first: a mistyped setting or path should not wait for gradio and the models.
    check_demo_config(cfg)
    check_address(cfg.server_name, cfg.port)
    resolve_device(cfg.device)
    paths = checkpoint_paths(cfg)
    # gradio reports usage to its makers unless told not to; this machine may have no network at all.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    require_gradio()
    from .page import CSS, build_page

    models = load_served_models(cfg, paths)
    out = Path(cfg.paths.output_dir)
    examples = example_pictures(models, out / "examples", cfg.examples)
    page = build_page(models, examples, out / "figures", cfg.figure_size, cfg.gif_frame_ms)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request gradio makes to itself
    # quiet: capgen-demo prints the address itself, without gradio's hints about its own launch() arguments.
    page.launch(server_name=cfg.server_name, server_port=cfg.port, prevent_thread_lock=True, show_error=True,
                allowed_paths=[str(out)], css=CSS, share=False, inbrowser=False, quiet=True)
    log.info("serving %s at %s; the attention figures go to %s", ", ".join(c.name for c in models),
             page.local_url, out / "figures")
    return page


def run(cfg: DictConfig) -> None:
    """capgen-demo's Hydra job: serve the page, a failure to start it ended in one paragraph,
    then serve until Ctrl-C or SIGTERM."""
    with one_paragraph_on_failure("capgen-demo"):
        page = serve(cfg)
    print(f"capgen-demo: serving at {page.local_url} (Ctrl-C stops)", flush=True)
    # Until Ctrl-C (SIGTERM ends the process as any signal does). gradio's own block_thread
    # would take the Ctrl-C, print its line and return: the command would end with status 0.
    try:
        while page.is_running:
            time.sleep(0.1)
    except KeyboardInterrupt:
        page.close()
        print("capgen-demo: interrupted (Ctrl-C); the page is closed.", file=sys.stderr, flush=True)
        raise SystemExit(128 + 2) from None
