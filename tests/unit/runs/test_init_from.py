"""init_from: a checkpoint whose vocabulary misses the data's words is refused unless accepted; a run
folder stands for its best checkpoint, a stopped run's best so far included."""

import logging

import pytest

from capgen.runs.init_from import checkpoint_file

from helpers.runs import make_run_folder


def test_init_from_a_checkpoint_whose_vocabulary_misses_the_datas_words_is_refused_unless_accepted():
    from types import SimpleNamespace

    from capgen.runs.init_from import check_coverage
    from capgen.vocab import Vocabulary

    data = [f"w{k} w{k + 1} w{k + 2}" for k in range(40)]  # 42 words
    other = SimpleNamespace(path="other/best.ckpt", vocab=Vocabulary.build(["w0 w1 w2 w3 w4 w5 cat sat"]))
    with pytest.raises(ValueError, match=r"^init_from=other/best\.ckpt: its vocabulary covers 6 of the 42 words .*"
                                         r"init_from_min_coverage=0\.14 \(0: any\)\.$"):
        check_coverage(other, data, min_freq=1, max_len=20, min_coverage=0.5)
    assert check_coverage(other, data, min_freq=1, max_len=20, min_coverage=0) == pytest.approx(6 / 42)
    same = SimpleNamespace(path="same.ckpt", vocab=Vocabulary.build(data))
    assert check_coverage(same, data, min_freq=1, max_len=20, min_coverage=0.5) == 1.0
    with pytest.raises(ValueError, match=r"^init_from_min_coverage=1\.5: a share from 0 to 1"):
        check_coverage(same, data, min_freq=1, max_len=20, min_coverage=1.5)


@pytest.mark.parametrize("status", ["interrupted", "failed"])
def test_a_run_folder_that_stopped_after_a_best_epoch_gives_its_best_so_far_with_a_warning(tmp_path, caplog, status):
    """A cross-entropy run stopped by hand once its score is good enough, then SCST from it."""
    run = make_run_folder(tmp_path / "run", ["model=attn"], {"status": status, "best_checkpoint": "checkpoints/best.ckpt"})
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "best.ckpt").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="capgen.runs.init_from"):
        assert checkpoint_file(run) == run / "checkpoints" / "best.ckpt"
    assert "before it finished; starting from its best checkpoint so far, checkpoints/best.ckpt" in caplog.text
    (run / "checkpoints" / "best.ckpt").unlink()
    with pytest.raises(ValueError, match=rf"init_from={run}: the run (was interrupted before its first best checkpoint|is failed "
                                         rf"with no best checkpoint) \(summary.json\); give a checkpoint file instead"):
        checkpoint_file(run)
