"""The run's vocab.json under DDP: written by rank 0 alone."""

from lightning.fabric.utilities.rank_zero import rank_zero_only

from capgen.commands.train.fit import save_run_vocab
from capgen.vocab import Vocabulary


def test_only_rank_zero_writes_the_runs_vocab_json(tmp_path, monkeypatch):
    # Both ranks of a DDP run build the same vocabulary; had both written it, they would have
    # shared vocab.json.tmp and one rename found the other's file gone.
    vocab = Vocabulary.build(["a red square", "a blue circle"])
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    save_run_vocab(tmp_path, vocab)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(rank_zero_only, "rank", 0)
    save_run_vocab(tmp_path, vocab)
    assert Vocabulary.load(tmp_path / "vocab.json") == vocab
