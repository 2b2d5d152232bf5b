"""Finding runs and what they say about themselves: which folders are capgen-train runs, a run's
best checkpoint, named or refused."""


import pytest

from capgen.runs.folders import best_checkpoint, find_runs

from helpers.runs import half_written, make_run_folder


def test_eval_of_a_run_with_a_half_written_summary_says_what_is_wrong_and_what_to_give(tmp_path):
    run = make_run_folder(tmp_path / "run", [])
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    (run / "summary.json").write_text(half_written({"status": "completed", "metrics": {"val/CIDEr": 0.5}}))
    with pytest.raises(ValueError, match=r"run=.*/run: its best checkpoint is named in summary.json, which is unreadable: "
                                         r".*/run/summary.json: cannot be read as JSON .*give ckpt_path=<file> instead; "
                                         r".*checkpoints holds \['last.ckpt'\]") as raised:
        best_checkpoint(run)
    assert "\n" not in str(raised.value)


def command_folder(path, config_name: str, overrides: list[str]):
    """A folder as a capgen command leaves it: .hydra/ with the config Hydra composed named in hydra.yaml."""
    make_run_folder(path, overrides)
    (path / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  job:\n    name: {config_name}\n    config_name: {config_name}\n")
    return path


def test_only_capgen_train_folders_are_runs_not_those_of_eval_caption_demo_or_prepare(tmp_path):
    run = command_folder(tmp_path / "train" / "2026-12-05_13-26-52", "train", ["task_name=mine"])  # task_name may be changed
    copied = make_run_folder(tmp_path / "train" / "copied", [])  # no hydra.yaml (copied without it): still a run
    others = [command_folder(tmp_path / c / "2026-12-05_13-30-05", c, [f"run={run}"]) for c in ("eval", "caption", "demo", "prepare")]
    assert find_runs(tmp_path) == [run, copied]
    assert find_runs(others[0]) == []
    with pytest.raises(ValueError, match=r"^run=.*/eval/2026-12-05_13-30-05: not a capgen-train run folder \(its "
                                         r"\.hydra/hydra\.yaml says capgen-eval wrote it\); give a run folder of capgen-train's"):
        best_checkpoint(others[0])
