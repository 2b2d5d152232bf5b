"""Shared fixtures. Layout: tests mirror the package. unit/<package>/ tests one piece of it
(unit/data/ the data sources, unit/runs/ the run folder, ...; the top-level modules and the
package-wide rules at unit/ itself), never trains an epoch and never starts a process;
e2e/<command>/ runs a whole command (capgen-train, -eval, -caption, -prepare, -demo; sweeps,
DDP, kills), e2e/scoring/ the official scorers and e2e/scripts/ the scripts, and e2e/ shares
its trained runs (the session fixtures below); helpers/ is what they share (the cheap test
config and run readers in helpers.runs, child processes in helpers.procs, data in the exact
on-disk formats, small stand-ins in helpers.fakes); data/ holds the official demo results file
the tokenizer is checked on."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig
from PIL import Image

from capgen import config
from capgen.data.shapes import ShapesSource
from capgen.lightning.callbacks.faults import RunInterrupted

from helpers import procs
from helpers.runs import compose_train, train_run

config.register()  # what every capgen command does before Hydra composes its configs


# --- processes never outlive the suite -----------------------------------------------------

def _stop_on_sigterm(signum, frame):
    """pytest sent SIGTERM (`timeout`, a CI runner): end every child process group, pass the
    signal on to the xdist workers (which do the same with theirs: a SIGTERM to the main
    pytest process alone would leave them running their next test for a while), then stop
    the session as Ctrl-C would (fixtures torn down, the summary printed)."""
    procs.end_all()
    for pid in procs.children():
        try:
            os.kill(pid, signum)
        except ProcessLookupError:  # it ended meanwhile
            pass
    raise KeyboardInterrupt(f"pytest received {signal.Signals(signum).name}")


def pytest_configure(config):
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # One torch thread per worker (and per process it starts): the workers share the cores.
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


def pytest_unconfigure(config):
    procs.end_all()


def pytest_collection_modifyitems(config, items):
    """Files holding long tests first (marked slow), then the other end-to-end files, then the
    unit ones, each file's tests in their order. pytest-xdist hands out whole files in this order
    (`--dist loadfile --no-loadscope-reorder` in pyproject.toml), so the long files start early
    and the many short unit files fill in at the end. xdist's own order (most tests first) left
    the long few-test end-to-end files for last: one worker then ran the soak or the benchmark
    alone while the other idled (about 30 s of a 11-minute run on a 2-core EPYC Zen 3)."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: 0 if item.path in slow_files else 1 if "e2e" in item.path.parts else 2)  # stable


# --- each test finds logging as pytest set it up -------------------------------------------

def _pytests_own(handler: logging.Handler) -> bool:
    """The handlers pytest's logging plugin adds and removes around each phase of a test."""
    return type(handler).__module__.startswith("_pytest")


@pytest.fixture(autouse=True)
def _logging_left_as_found():
    """A command's main() run in this process (tests/e2e/train/test_first_hour_commands.py and
    others) configures logging as Hydra's job does: the root logger at INFO with a console and a
    file handler. Left so, a later test in the same worker saw those INFO records in `caplog`
    even under `caplog.at_level(WARNING)`. Restore the root logger's level and handlers, and the
    level, propagation and disabled flag of every logger that existed before the test."""
    loggers = {name: lg for name, lg in logging.Logger.manager.loggerDict.items() if isinstance(lg, logging.Logger)}
    saved = {name: (lg.level, lg.propagate, lg.disabled) for name, lg in loggers.items()}
    root = logging.getLogger()
    root_level, root_handlers = root.level, [h for h in root.handlers if not _pytests_own(h)]
    disabled_below = logging.root.manager.disable
    yield
    logging.disable(disabled_below)
    for name, (level, propagate, disabled) in saved.items():
        lg = loggers[name]
        lg.setLevel(level)
        lg.propagate, lg.disabled = propagate, disabled
    root.setLevel(root_level)
    for handler in [h for h in root.handlers if not _pytests_own(h) and h not in root_handlers]:
        root.removeHandler(handler)
        handler.close()  # Hydra's file handler keeps the run's log file open
    for handler in root_handlers:
        if handler not in root.handlers:
            root.addHandler(handler)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A SIGTERM that arrives while a test trains in this process is taken by capgen's own
    handler (StopOnSignal), which stops the run: the session stops with it."""
    yield
    if call.excinfo is not None and call.excinfo.errisinstance(RunInterrupted):
        procs.end_all()
        item.session.shouldstop = "a training in the test process stopped on a signal"


@pytest.fixture(scope="session", autouse=True)
def _temporary_files_in_the_suites_folder(tmp_path_factory):
    """The temporary folder of this process and of the commands it starts: one in pytest's own
    (which keeps the last few sessions' and removes older ones), not the system's /tmp, where a
    refused command's traceback file (capgen.commands.failure) would otherwise stay behind."""
    folder = tmp_path_factory.mktemp("tmp")
    old = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(folder)
    tempfile.tempdir = None  # read TMPDIR again
    yield
    if old is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = old
    tempfile.tempdir = None


@pytest.fixture(autouse=True)
def _end_test_processes():
    """The processes a test started end with it, passed or failed (those of module and session
    fixtures, started before it, with their fixtures)."""
    before = procs.live()
    yield
    procs.end_all(keep=before)


# --- configs and trained runs ----------------------------------------------------------------

@pytest.fixture
def make_cfg(tmp_path):
    """Compose the train config as `capgen-train debug=fast` would, writing into tmp_path/name,
    with the cheap test settings (helpers.runs) unless rich=True."""

    def make(*overrides: str, name: str = "run", small_shapes: bool = True, rich: bool = False) -> DictConfig:
        return compose_train(Path(tmp_path) / name, *overrides, rich=rich, small_shapes=small_shapes)

    return make


# One tiny trained run of each decoder per session. val and test differ in size so the tests
# can tell which split, and whose settings, were used. A test that changes a run copies it
# first (copy_run).
RUN_SIZES = "data.source.sizes={train:64,val:12,test:16}"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A tiny attention (model=attn) run with what capgen-train logs by default (TensorBoard, the
    caption samples and attention figures) but the Java metrics."""
    return train_run(tmp_path_factory.mktemp("train") / "run", RUN_SIZES, "model.module.test.metrics=[BLEU,ROUGE-L,CIDEr]",
                     rich=True)


@pytest.fixture(scope="session")
def ckpt(tiny_run) -> str:
    return str(tiny_run / "checkpoints" / "last.ckpt")


@pytest.fixture(scope="session")
def tiny_lstm_run(tmp_path_factory) -> Path:
    """The same with the LSTM decoder (no attention)."""
    return train_run(tmp_path_factory.mktemp("train_lstm") / "run", RUN_SIZES, "model=lstm")


@pytest.fixture(scope="session")
def tiny_transformer_run(tmp_path_factory) -> Path:
    """A tiny Transformer-decoder run (small widths), logging as tiny_run does."""
    return train_run(tmp_path_factory.mktemp("train_transformer") / "run", RUN_SIZES, "model=transformer",
                     "model.decoder.d_model=32", "model.decoder.ffn_dim=64", "model.module.test.metrics=[BLEU,ROUGE-L,CIDEr]",
                     rich=True)


@pytest.fixture(scope="session")
def tiny_rnn_run(tmp_path_factory) -> Path:
    """The same with the vanilla RNN decoder."""
    return train_run(tmp_path_factory.mktemp("train_rnn") / "run", RUN_SIZES, "model=rnn")


@pytest.fixture
def copy_run(tmp_path):
    """copy_run(run) -> a copy of a shared run under tmp_path, for a test that changes it."""

    def copy(run: Path, name: str = "copy") -> Path:
        return Path(shutil.copytree(run, tmp_path / name))

    return copy


@pytest.fixture
def photo_dir(tmp_path) -> Path:
    """A PNG, a grayscale JPEG and a big JPEG, as a user's folder might hold (capgen-caption's input)."""
    d = tmp_path / "photos"
    d.mkdir()
    shapes = ShapesSource("test", sizes={"test": 3})
    Image.fromarray(shapes.image(0)).save(d / "scene.png")
    Image.fromarray(shapes.image(1)).convert("L").save(d / "gray.jpg")
    Image.fromarray(shapes.image(2)).resize((2000, 1500)).save(d / "big.JPG")
    return d


# --- failures of the machine ------------------------------------------------------------------

@pytest.fixture
def read_only(monkeypatch, tmp_path):
    """tmp_path/ro as if on a read-only mount (a test cannot mount one; root may write anywhere else)."""
    import os

    folder = tmp_path / "ro"
    folder.mkdir()
    access, statvfs = os.access, os.statvfs

    def on_it(path):
        return str(os.fspath(path)).startswith(str(folder))

    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if on_it(p) and mode & os.W_OK else access(p, mode, **kw))

    class ReadOnly:
        def __init__(self, real):
            self.real = real

        def __getattr__(self, name):
            return os.ST_RDONLY | self.real.f_flag if name == "f_flag" else getattr(self.real, name)

    monkeypatch.setattr(os, "statvfs", lambda p: ReadOnly(statvfs(p)) if on_it(p) else statvfs(p))
    return folder
