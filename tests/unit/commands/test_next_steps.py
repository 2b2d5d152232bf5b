"""What capgen-train says when it ends, however it ends: where the run is, how it went, and the
commands to run next (tested without training: the run folders are written here)."""

import json
from pathlib import Path


def _write_run(run: Path, summary: dict, overrides: list[str], tensorboard: bool = True) -> Path:
    (run / ".hydra").mkdir(parents=True)
    if tensorboard:  # its logger wrote events (conf/logger/tensorboard.yaml)
        (run / "tb").mkdir()
    (run / ".hydra" / "config.yaml").write_text("seed: 42\n")
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def test_the_end_of_a_completed_run_names_its_best_checkpoint_and_the_next_commands(tmp_path):
    from capgen.commands.train.next_steps import what_next

    run = _write_run(tmp_path / "run", {"status": "completed", "best_checkpoint": "checkpoints/epoch003-best2.500.ckpt",
                                        "metrics": {"val/CIDEr": 2.5, "test/CIDEr": 2.25}}, ["model=lstm"])
    lines = what_next(run)
    assert lines[0] == f"run folder: {run} (completed)"
    assert lines[1] == "best checkpoint: checkpoints/epoch003-best2.500.ckpt (val/CIDEr 2.500), test/CIDEr 2.250"
    text = "\n".join(lines)
    for command in (f"tensorboard --logdir {run}", f"capgen-eval run={run}",
                    f"capgen-caption ckpt_path={run}/checkpoints/epoch003-best2.500.ckpt images=", f"capgen-demo run={run}"):
        assert command in text
    assert len(lines) <= 8  # a few lines
    # Without TensorBoard events (logger=[] or [csv]), no command that shows none.
    quiet = _write_run(tmp_path / "quiet", {"status": "completed", "best_checkpoint": "checkpoints/b.ckpt", "metrics": {}},
                       ["logger=[csv]"], tensorboard=False)
    assert "tensorboard" not in "\n".join(what_next(quiet)) and f"capgen-eval run={quiet}" in "\n".join(what_next(quiet))


def test_the_end_of_a_failed_or_interrupted_run_says_what_to_run_next(tmp_path):
    from capgen.commands.train.next_steps import what_next

    failed = _write_run(tmp_path / "failed", {"status": "failed", "error": "ValueError: bad", "traceback": "error.txt"},
                        ["model=lstm", "data.source.sizes={train:8,val:4,test:4}", "ckpt_path='/runs/a b/last.ckpt'",
                         "data.root='~/pets'"])
    lines = what_next(failed)
    assert lines[0] == f"run folder: {failed} (failed; traceback in {failed / 'error.txt'})"
    again = ("capgen-train model=lstm 'data.source.sizes={train:8,val:4,test:4}' 'ckpt_path=/runs/a b/last.ckpt' "
             "'data.root=~/pets'")  # as typed: capgen-train quotes paths for Hydra itself
    assert lines[1] == f"next: fix the cause and run again: {again}"
    # Failed after its first epoch (its data broke, say): resume= keeps the epochs it trained.
    (failed / "checkpoints").mkdir()
    (failed / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert what_next(failed)[1] == f"next: fix the cause, then continue it: capgen-train resume={failed} (or start it again: {again})"
    # A sweep job's folder, named by its overrides: the command is quoted for the shell (bare,
    # bash would expand the braces into three arguments), also where the summary has it bare.
    stopped = _write_run(tmp_path / "0_data.source.sizes={train:8,val:4},seed=1", {
        "status": "interrupted", "signal": "SIGTERM", "resume": f"capgen-train resume={tmp_path / 'stopped'}"}, [])
    (stopped / "checkpoints").mkdir()
    (stopped / "checkpoints" / "epoch002-best1.250.ckpt").write_bytes(b"")
    assert what_next(stopped)[1:] == ["best checkpoint so far: checkpoints/epoch002-best1.250.ckpt",
                                      f"next: continue it where it stopped: capgen-train resume='{stopped}'"]
    early = _write_run(tmp_path / "early", {"status": "interrupted", "signal": "SIGINT", "checkpoint": None}, ["model=lstm"])
    assert what_next(early)[1:] == ["next: it stopped before its first checkpoint; run it again: capgen-train model=lstm"]
    # Its folder named on the command line: run again there (it holds nothing a new run would overwrite).
    (early / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  overrides:\n    hydra:\n    - hydra.run.dir={early}\n")
    assert what_next(early)[1:] == [f"next: it stopped before its first checkpoint; run it again: capgen-train model=lstm "
                                    f"hydra.run.dir={early}"]
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    assert "ended before writing summary.json" in what_next(unfinished)[1]


def test_the_end_of_a_run_without_a_best_checkpoint_names_only_commands_that_work(tmp_path):
    from capgen.commands.train.next_steps import what_next

    quick = _write_run(tmp_path / "quick", {"status": "completed", "best_checkpoint": None, "metrics": {}}, [])
    assert what_next(quick, fast_dev_run=True)[1:] == [
        "no checkpoint was written (trainer.fast_dev_run writes none)", "next:",
        f"  tensorboard --logdir {quick}    # then open its #custom_scalars page: scores and losses first"]
    (quick / "tb").rmdir()  # logger=[]: nothing to run next
    assert what_next(quick, fast_dev_run=True)[1:] == ["no checkpoint was written (trainer.fast_dev_run writes none)"]
    assert what_next(quick)[1] == "no checkpoint was written"  # not blamed on a fast_dev_run that was not set
    (quick / "checkpoints").mkdir()
    (quick / "checkpoints" / "last.ckpt").write_bytes(b"")
    text = "\n".join(what_next(quick))
    last = quick / "checkpoints" / "last.ckpt"
    assert f"capgen-eval ckpt_path={last}" in text and f"capgen-demo ckpt_path={last}" in text and "run=" not in text


def test_the_end_of_a_run_on_data_without_a_test_split_suggests_no_capgen_eval_on_it(tmp_path):
    from capgen.commands.train.next_steps import what_next

    done = {"status": "completed", "best_checkpoint": "checkpoints/epoch000-best3.750.ckpt", "metrics": {"val/CIDEr": 3.75}}
    run = _write_run(tmp_path / "run", done, ["data=custom", "test=false"])
    text = "\n".join(what_next(run, without_images=["test"]))
    assert f"  capgen-eval run={run} split=val    # the checkpoint on the val split (the data has no test images)" in text
    assert "test split" not in text and f"capgen-caption ckpt_path={run}/checkpoints/epoch000-best3.750.ckpt" in text
    # Neither val nor test has images: no capgen-eval at all; the other commands still work.
    text = "\n".join(what_next(run, without_images=["val", "test"]))
    assert "capgen-eval" not in text and f"capgen-demo run={run}" in text
    # Stopped on the way: its best so far is scored on val, or nowhere.
    stopped = _write_run(tmp_path / "stopped", {**done, "status": "interrupted", "signal": "SIGINT", "resume": "x"}, [])
    assert what_next(stopped, without_images=["test"])[1] == (
        f"best checkpoint so far: checkpoints/epoch000-best3.750.ckpt (val/CIDEr 3.750); capgen-eval run={stopped} "
        "split=val scores it")
    assert what_next(stopped, without_images=["val", "test"])[1] == (
        "best checkpoint so far: checkpoints/epoch000-best3.750.ckpt (val/CIDEr 3.750)")


def test_the_splits_a_run_leaves_out_are_checked_for_images_raw_and_one_that_cannot_be_read_is_not_counted(make_cfg):
    import functools

    import hydra

    from capgen.commands.train.fit import splits_without_images
    from capgen.data.shapes import ShapesSource

    cfg = make_cfg("test=false", "trainer.limit_val_batches=0", "data.source.sizes={train:16,val:0,test:0}")
    datamodule = hydra.utils.instantiate(cfg.data)
    assert splits_without_images(cfg, datamodule) == ["val", "test"]
    cfg = make_cfg("test=false", "data.source.sizes={train:16,val:4,test:0}")
    assert splits_without_images(cfg, hydra.utils.instantiate(cfg.data)) == ["test"]  # val is used: it has images
    datamodule.source_factory = functools.partial(ShapesSource, sizes={"test": -1})  # its error is capgen-eval's to say
    assert splits_without_images(cfg, datamodule) == []


def test_the_end_of_a_resume_that_failed_and_left_the_run_as_it_was_claims_no_outcome_of_its_own(tmp_path):
    """Its records put back (capgen.runs.records), the run still says completed; the resume failed,
    so the end names that, the traceback and the resume to run again, not the completed run's next steps."""
    from capgen.commands.train.next_steps import what_next

    command = f"capgen-train resume={tmp_path / 'run'} trainer.max_epochs=4"
    run = _write_run(tmp_path / "run", {"status": "completed", "best_checkpoint": "checkpoints/b.ckpt", "metrics": {},
                                        "resume_failed": {"error": "FileNotFoundError: data root /d does not exist",
                                                          "traceback": "error.resume-2026-01-02_03-04-05.txt",
                                                          "command": command}}, ["model=lstm"])
    assert what_next(run) == [
        f"run folder: {run} (this resume failed, traceback in {run / 'error.resume-2026-01-02_03-04-05.txt'}; the run is "
        "as it was before it: completed)",
        f"next: fix the cause, then run the resume again: {command}"]
