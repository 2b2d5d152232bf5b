"""A run's test records (capgen.runs.tested): the earlier test a resume with test=false keeps.
test_captions.jsonl itself is read by capgen-compare --paired (tests/unit/commands/test_compare.py)."""

from capgen.runs.records import write_summary
from capgen.runs.tested import EarlierTest

from helpers.runs import make_run_folder


def test_an_earlier_test_describes_only_the_very_best_checkpoint_it_was_measured_on(tmp_path):
    """What a resume with test=false keeps (capgen.commands.train.fit): the earlier test/* hold
    while the run's best is the same file, unwritten; not for another best, nor for the same
    name written again (a resume from an earlier checkpoint that reached that epoch again)."""
    run = make_run_folder(tmp_path / "run", ["model=rnn"])
    (run / "checkpoints").mkdir()
    best = run / "checkpoints" / "epoch001-best0.300.ckpt"
    best.write_bytes(b"weights")
    write_summary(run, {"val/CIDEr": 0.3, "test/CIDEr": 0.25, "test/loss": 2.0}, str(best), {"method": "beam"})
    earlier = EarlierTest.read(run)
    assert earlier.metrics == {"test/CIDEr": 0.25, "test/loss": 2.0} and earlier.decode == {"method": "beam"}
    assert earlier.describes(run, str(best))
    assert not earlier.describes(run, str(run / "checkpoints" / "epoch002-best0.400.ckpt"))
    assert not earlier.describes(run, None)  # a resume that left no best
    best.write_bytes(b"weights again, trained anew")
    assert not earlier.describes(run, str(best))
    write_summary(run, {"val/CIDEr": 0.3}, str(best))  # tested with test=false: nothing to keep
    assert EarlierTest.read(run) is None
