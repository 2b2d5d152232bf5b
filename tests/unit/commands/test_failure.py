"""How a command ends on Ctrl-C (capgen.commands.failure): one line of its own and exit status
130, Lightning's line left out, in a single run and in a sweep; and one line for a Ctrl-C
outside the job. What the commands do on a failure is tested with each command."""

from __future__ import annotations

import logging
import signal
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning_utilities.core.rank_zero import rank_zero_info
from omegaconf import OmegaConf

from capgen.commands.failure import LIGHTNING_RANK_ZERO_LOG, one_line_on_ctrl_c, one_paragraph_on_failure
from capgen.config import CONF_DIR


@pytest.fixture
def hydra_mode(request, tmp_path):
    """A Hydra app's config in this process, in the mode asked (RUN, or MULTIRUN for a sweep)."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("eval", overrides=[f"hydra.run.dir={tmp_path}"], return_hydra_config=True)
    OmegaConf.set_readonly(cfg.hydra, False)
    cfg.hydra.mode = request.param
    cfg.hydra.runtime.output_dir = str(tmp_path)
    HydraConfig.instance().set_config(cfg)
    yield request.param
    HydraConfig.instance().cfg = None  # other tests see no Hydra app, as outside one


class Kept(logging.Handler):
    """The messages that reach the handlers of Lightning's rank-zero logger."""

    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def lightning_lines():
    log = logging.getLogger(LIGHTNING_RANK_ZERO_LOG)
    kept, level = Kept(), log.level
    log.addHandler(kept)
    log.setLevel(logging.INFO)
    yield kept.messages
    log.removeHandler(kept)
    log.setLevel(level)


def ctrl_c_in_lightning():
    """What Lightning's trainer does with a Ctrl-C in fit or test (its _call_and_handle_interrupt)."""
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        rank_zero_info("\nDetected KeyboardInterrupt, attempting graceful shutdown ...")
        sys.exit(1)


@pytest.mark.parametrize("hydra_mode", [RunMode.RUN, RunMode.MULTIRUN], indirect=True)
@pytest.mark.parametrize("ctrl_c", [ctrl_c_in_lightning, signal.default_int_handler], ids=["in_lightning", "bare"])
def test_a_ctrl_c_in_the_job_ends_in_one_line_and_status_130_in_a_run_and_in_a_sweep(hydra_mode, ctrl_c, lightning_lines,
                                                                                    capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as ended, one_paragraph_on_failure("capgen-eval", on_interrupt="What next."):
        ctrl_c(signal.SIGINT, None) if ctrl_c is signal.default_int_handler else ctrl_c()
    assert ended.value.code == 130
    sweep = "; the sweep stops here, its later jobs not started" if hydra_mode == RunMode.MULTIRUN else ""
    assert capsys.readouterr().err == f"capgen-eval: interrupted (Ctrl-C){sweep}. What next.\n"
    assert lightning_lines == []  # Lightning's own line left out
    rank_zero_info("a later line of Lightning's")  # only while the command ends
    assert lightning_lines == ["a later line of Lightning's"]


@pytest.mark.parametrize("hydra_mode", [RunMode.RUN], indirect=True)
def test_hydra_full_error_keeps_the_ctrl_c_as_it_is(hydra_mode, monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(SystemExit) as ended, one_paragraph_on_failure("capgen-eval"):
        ctrl_c_in_lightning()
    assert ended.value.code == 1 and isinstance(ended.value.__context__, KeyboardInterrupt)


def test_a_ctrl_c_outside_the_job_ends_in_one_line_and_status_130(capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as ended, one_line_on_ctrl_c("capgen-train"):
        raise KeyboardInterrupt  # while the command line is checked, say
    assert ended.value.code == 130
    assert capsys.readouterr().err == "capgen-train: interrupted (Ctrl-C).\n"
    with pytest.raises(SystemExit) as ended, one_line_on_ctrl_c("capgen-train"):
        raise SystemExit(130)  # the job's own ending passes as it is
    assert ended.value.code == 130 and capsys.readouterr().err == ""
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(KeyboardInterrupt), one_line_on_ctrl_c("capgen-train"):
        raise KeyboardInterrupt


@pytest.mark.parametrize("hydra_mode", [RunMode.RUN, RunMode.MULTIRUN], indirect=True)
def test_a_training_stopped_by_ctrl_c_says_so_once_and_in_a_sweep_that_the_sweep_stops(hydra_mode, tmp_path, capsys,
                                                                                        monkeypatch):
    """capgen-train's run records its stop and says how to continue it (capgen.runs.records), so
    the command adds no line of its own; in a sweep it adds that the later jobs were not started.
    A Ctrl-C outside Lightning (while the data loads): the interruption's own exit, RunStopped."""
    from capgen.commands.train import fit
    from capgen.runs.records import RunStopped, read_summary

    def ctrl_c_while_the_data_loads(cfg):
        raise KeyboardInterrupt

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(fit, "train", ctrl_c_while_the_data_loads)
    cfg = OmegaConf.create({"paths": {"output_dir": str(tmp_path)}, "monitor": "val/CIDEr", "trainer": {}})
    handler = logging.FileHandler(tmp_path / "train.log")  # Hydra's job log
    logging.getLogger().addHandler(handler)
    try:
        with pytest.raises(RunStopped) as ended:
            fit.run(cfg)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    assert ended.value.code == 130 and read_summary(tmp_path)["status"] == "interrupted"
    said = (["capgen-train: interrupted (Ctrl-C); the sweep stops here, its later jobs not started."]
            if hydra_mode == RunMode.MULTIRUN else [])
    assert [line for line in capsys.readouterr().err.splitlines() if line.startswith("capgen-train:")] == said
    assert [line for line in (tmp_path / "train.log").read_text().splitlines() if line.startswith("capgen-train:")] == said


@pytest.mark.parametrize("hydra_mode", [RunMode.RUN], indirect=True)
def test_how_a_command_ended_is_in_its_log_file_too(hydra_mode, tmp_path, capsys, monkeypatch):
    """The output folder's <command>.log (Hydra's job logging, a FileHandler on the root logger)
    says how the command ended, Ctrl-C or failure; the console shows the line once."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    handler = logging.FileHandler(tmp_path / "eval.log")
    logging.getLogger().addHandler(handler)
    try:
        with pytest.raises(SystemExit), one_paragraph_on_failure("capgen-eval"):
            ctrl_c_in_lightning()
        with pytest.raises(SystemExit) as ended, one_paragraph_on_failure("capgen-eval"):
            raise ValueError("decode.top_p=1.5: give a probability mass in (0, 1]")
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    assert (tmp_path / "eval.log").read_text().splitlines() == [
        "capgen-eval: interrupted (Ctrl-C).", f"{ended.value.code}"]
    assert capsys.readouterr().err.count("interrupted (Ctrl-C)") == 1
