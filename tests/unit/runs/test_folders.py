"""Finding runs and what they say about themselves: a run's best checkpoint, named or refused."""


import pytest

from capgen.runs.folders import best_checkpoint

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
