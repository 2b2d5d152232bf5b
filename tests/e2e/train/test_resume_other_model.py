"""No silent results, where a trained run is needed: another model's last.ckpt in a run folder
(the shared session runs of tests/conftest.py; nothing is trained here)."""

import shutil

import pytest
from omegaconf import OmegaConf

from capgen.config.resume_argv import check_resume, said_before_logging

from helpers.runs import snapshot


def own(run) -> list[str]:
    """The overrides the session's run was trained with (as resume= replays them)."""
    return OmegaConf.to_container(OmegaConf.load(run / ".hydra" / "overrides.yaml"))


def test_another_models_last_ckpt_falls_back_to_the_runs_own_newest_checkpoint(tiny_run, tiny_lstm_run, copy_run):
    run = copy_run(tiny_run, "run")
    shutil.copy(tiny_lstm_run / "checkpoints" / "last.ckpt", run / "checkpoints" / "last.ckpt")  # an LSTM's, in an attention run
    before = snapshot(run)
    fallback = check_resume(run, own(run), [f"resume={run}", "trainer.max_epochs=2"])
    [best] = (run / "checkpoints").glob("epoch*.ckpt")
    assert fallback == best  # the run's own newest loadable checkpoint, not the command that just failed again
    [warning] = said_before_logging()  # for the job to log, into the run's train.log too
    assert "holds another network than this run trained" in warning and best.name in warning
    assert snapshot(run) == before

    best.unlink()  # nothing of the run's own left: the error must not advise `capgen-train resume=<run>`
    with pytest.raises(ValueError) as err:
        check_resume(run, own(run), [f"resume={run}"])
    message = str(err.value)
    assert "holds another network" in message and "start it again without resume=" in message
    assert f"Resume with the run's own network: capgen-train resume={run}" not in message


def test_settings_that_change_the_network_still_name_themselves(tiny_run, copy_run):
    run = copy_run(tiny_run, "run")
    with pytest.raises(ValueError, match=r"model\.decoder\.hidden_dim=7 would build another network than the run trained"):
        check_resume(run, own(run), [f"resume={run}", "model.decoder.hidden_dim=7"])
