"""A dated run folder of its own for every command (capgen.config.new_folder): two commands
launched in the same second (the launch time fixed through CAPGEN_LAUNCH_TIME, as
capgen.config.registry.launch_time reads it) get `<time>` and `<time>_1`. Hydra's main runs
in this process, as each capgen command runs it once its command line is checked."""

from __future__ import annotations

import contextlib
import itertools
import sys
import time
from pathlib import Path

import hydra
import pytest
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import OmegaConf

from capgen.config import CONF_DIR
from capgen.config.new_folder import reserve

NOW = 1_700_000_000.0
STAMP = time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(NOW))
QUIET = ["hydra/job_logging=none", "hydra/hydra_logging=none"]  # this process's logging left as it is


@pytest.fixture(autouse=True)
def same_second(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CAPGEN_LAUNCH_TIME", str(NOW))


def launch(monkeypatch, command: str, *args: str) -> list[tuple[str, str]]:
    """Hydra's main for capgen-`command`'s config with `args` (sys.argv[1:]): for each job it
    runs, its folder and the hydra.run.dir it sees (what Lightning hands DDP's processes), both
    relative to the working directory."""
    jobs = []

    @hydra.main(version_base="1.3", config_path=CONF_DIR, config_name=command)
    def app(cfg):
        hydra_cfg = HydraConfig.get()
        jobs.append((str(Path(hydra_cfg.runtime.output_dir).relative_to(Path.cwd())), hydra_cfg.run.dir))

    monkeypatch.setattr(sys, "argv", [f"capgen-{command}", *args, *QUIET])
    try:
        app()
    finally:
        HydraConfig.instance().cfg = None  # other tests see no Hydra app, as outside one
    return jobs


def folders(task: str) -> list[str]:
    parent = Path("outputs") / task
    return sorted(p.name for p in parent.iterdir()) if parent.is_dir() else []


@pytest.mark.parametrize("command", ["train", "eval", "caption", "prepare", "demo"])
def test_two_commands_launched_in_the_same_second_get_a_folder_each(command, monkeypatch):
    first = launch(monkeypatch, command)
    second = launch(monkeypatch, command)
    assert first == [(f"outputs/{command}/{STAMP}",) * 2]
    # The folder Hydra wrote into is the one DDP's processes are sent to.
    assert second == [(f"outputs/{command}/{STAMP}_1",) * 2]
    assert folders(command) == [STAMP, f"{STAMP}_1"]
    assert (Path(second[0][0]) / ".hydra" / "config.yaml").is_file()


def test_two_sweeps_launched_in_the_same_second_get_a_folder_each_that_their_jobs_and_ddp_processes_use(monkeypatch):
    first = launch(monkeypatch, "caption", "-m", "batch_size=1,2")
    second = launch(monkeypatch, "caption", "-m", "batch_size=1,2")
    assert folders("caption") == [f"multirun_{STAMP}", f"multirun_{STAMP}_1"]
    for jobs, sweep in ((first, f"multirun_{STAMP}"), (second, f"multirun_{STAMP}_1")):
        assert [job for job, _ in jobs] == [f"outputs/caption/{sweep}/0_batch_size=1", f"outputs/caption/{sweep}/1_batch_size=2"]
    # DDP's processes re-run sys.argv, `-m` included, and join the jobs: the sweep's folder is named
    # there, so they find it and reserve none of their own (nor does any rank > 0).
    again = [a for a in sys.argv[1:] if a not in QUIET]
    assert again == ["-m", "batch_size=1,2", f"hydra.sweep.dir='outputs/caption/multirun_{STAMP}_1'"]
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    assert [job for job, _ in launch(monkeypatch, "caption", *again)] == [job for job, _ in second]
    assert folders("caption") == [f"multirun_{STAMP}", f"multirun_{STAMP}_1"]


def test_a_sweeps_jobs_share_its_folder_when_they_start_seconds_apart(monkeypatch):
    # capgen-eval, -caption, -prepare and -demo set no launch time for their processes: each
    # job's config, composed again as it starts, named a multirun_<time> of its own second.
    monkeypatch.delenv("CAPGEN_LAUNCH_TIME")
    clock = itertools.count(NOW, 1.0)  # a second passes at each look at the clock
    monkeypatch.setattr(time, "time", lambda: next(clock))
    jobs = [job for job, _ in launch(monkeypatch, "caption", "-m", "batch_size=1,2,3")]
    (sweep,) = folders("caption")
    assert jobs == [f"outputs/caption/{sweep}/{i}_batch_size={i + 1}" for i in range(3)]


def test_a_folder_named_on_the_command_line_and_the_ranks_after_the_first_are_left_to_hydra(monkeypatch, tmp_path):
    # hydra.run.dir= (also what paths.output_dir= and resume= become, capgen.config.argv and
    # resume_argv), and what Lightning gives the processes DDP starts: as before, no suffix.
    named = tmp_path / "mine"
    assert launch(monkeypatch, "eval", f"hydra.run.dir={named}") == [("mine", str(named))]
    assert launch(monkeypatch, "eval", f"hydra.run.dir={named}") == [("mine", str(named))]
    assert not Path("outputs").exists()
    # torchrun's or SLURM's ranks after the first write where their rank 0 does, never a new folder.
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    launch(monkeypatch, "eval")
    launch(monkeypatch, "eval")
    assert folders("eval") == [STAMP]


def test_a_command_hydra_refuses_or_only_prints_and_a_composed_config_make_no_folder(monkeypatch, tmp_path):
    from hydra import compose, initialize_config_dir

    from capgen.config.checks import UnknownSetting
    from capgen.config.command_line import command_line

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(UnknownSetting):  # refused by capgen before Hydra runs
        command_line("caption", ["ckpt_path=x.ckpt", "images=x.jpg", "batch_sise=3"])
    with pytest.raises((SystemExit, HydraException)):  # refused by Hydra: no such config
        launch(monkeypatch, "caption", "decode=no_such_preset")
    for flag in ("--cfg=job", "--info=config", "--help"):
        with pytest.raises(SystemExit) if flag == "--help" else contextlib.nullcontext():
            launch(monkeypatch, "caption", flag)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):  # tests and notebooks
        cfg = compose("train", return_hydra_config=True)
    assert OmegaConf.select(cfg, "hydra.run.dir") == f"outputs/train/{STAMP}"
    assert OmegaConf.select(cfg, "hydra.sweep.dir") == f"outputs/train/multirun_{STAMP}"
    assert list(tmp_path.iterdir()) == []


def test_reserve_takes_the_first_free_name_and_never_one_that_exists(tmp_path):
    folder = tmp_path / "outputs" / "eval" / STAMP
    assert reserve(folder) == folder  # its parents made as needed
    (tmp_path / "outputs" / "eval" / f"{STAMP}_1").write_text("")  # a file takes a name too
    assert reserve(folder) == folder.with_name(f"{STAMP}_2")
    assert reserve(folder) == folder.with_name(f"{STAMP}_3")
    assert all(p.is_dir() for p in (folder, folder.with_name(f"{STAMP}_2"), folder.with_name(f"{STAMP}_3")))


def test_a_folder_made_for_a_run_and_left_with_nothing_but_its_lock_is_removed_and_any_other_kept(monkeypatch, tmp_path):
    """remove_unused takes away what this process made and wrote, nothing else: a folder holding a
    file of anyone else's, a .lock another process wrote, a folder it did not make."""
    import os

    from capgen.config import new_folder
    from capgen.runs.lock import LOCK_FILE, hold

    monkeypatch.setattr(new_folder, "_made", [])
    empty, locked, written, foreign = (tmp_path / "a" / name for name in ("empty", "locked", "written", "foreign"))
    for folder in (empty, locked, written, foreign):
        folder.mkdir(parents=True)
    hold(locked)  # holds its lock and names this process in its .lock
    hold(written)
    (written / "notes.txt").write_text("the user's")
    (foreign / LOCK_FILE).write_text(f"{os.getpid() + 1} elsewhere\n")
    untouched = tmp_path / "not made here"
    untouched.mkdir()
    new_folder.made_for_run([tmp_path / "a", empty, locked, written, foreign])
    new_folder.remove_unused()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["foreign", "written"]  # so "a" is kept too
    assert (written / "notes.txt").is_file() and (written / LOCK_FILE).is_file() and (foreign / LOCK_FILE).is_file()
    assert untouched.is_dir() and new_folder._made == []


@pytest.mark.parametrize("how", ["a config group Hydra refuses", "Ctrl-C as Hydra starts"])
def test_capgen_train_stopped_before_hydra_writes_its_named_folder_leaves_no_folder(monkeypatch, tmp_path, how):
    """A new folder named on the command line is made and locked before Hydra starts (its .lock
    written); stopped before Hydra writes into it, it is not left behind holding only .lock."""
    import capgen.cli.train as cli
    from capgen.config import new_folder

    monkeypatch.setattr(new_folder, "_made", [])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    run = tmp_path / "runs" / "new"
    args = ["model=lsmt"] if how.startswith("a config") else []
    if how.startswith("Ctrl-C"):
        def interrupted():
            assert (run / ".lock").is_file()  # made and locked by the command line's checks
            raise KeyboardInterrupt

        monkeypatch.setattr(cli, "_main", interrupted)
    monkeypatch.setattr(sys, "argv", ["capgen-train", *args, f"hydra.run.dir={run}", *QUIET])
    with pytest.raises(SystemExit) as ended:
        cli.main()
    assert ended.value.code == (1 if args else 130)
    assert not (tmp_path / "runs").exists()  # its parent made for it too
