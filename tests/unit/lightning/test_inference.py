"""Loading checkpoints for eval, caption and the demo (capgen.lightning.inference): one checkpoint,
or an ensemble of several, and what is refused. The checkpoints are written here from untrained
modules in capgen's format (no Trainer)."""

import pytest
import torch
from omegaconf import OmegaConf

from capgen.lightning.inference import checkpoint_list, load_checkpoints
from capgen.models.captioner import Captioner
from capgen.models.ensemble import Ensemble
from capgen.models.search import DecodeSettings

from helpers.fakes import CAPTIONS, write_checkpoint


@pytest.fixture
def ckpts(tmp_path):
    return [write_checkpoint(tmp_path / "lstm.ckpt", "lstm", seed=1), write_checkpoint(tmp_path / "attn.ckpt", "attn", seed=2)]


def _images():
    return torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_a_list_of_one_is_the_checkpoint_itself(ckpts):
    a = load_checkpoints(str(ckpts[1]))
    b = load_checkpoints([str(ckpts[1])])
    assert type(b.net) is Captioner  # not wrapped: the very path a single checkpoint takes
    settings = DecodeSettings(method="beam", beam_size=2, n_best=2)
    ra, rb = a.generate(_images(), settings), b.generate(_images(), settings)
    assert all(torch.equal(x, y) for x, y in zip(ra, rb))


def test_several_checkpoints_are_one_module_whose_net_is_their_ensemble(ckpts):
    module = load_checkpoints([str(p) for p in ckpts])
    assert isinstance(module.net, Ensemble) and len(module.net.members) == 2
    assert [type(m.decoder).__name__ for m in module.net.members] == ["LSTMDecoder", "AttentionDecoder"]
    assert module.net.has_attention and not module.training
    first = load_checkpoints(str(ckpts[0]))
    assert module.vocab == first.vocab and module.decoding == first.decoding  # the first member's settings
    result = module.generate(_images(), DecodeSettings(method="beam", beam_size=2))
    assert result.alphas is not None and result.alphas.shape[-1] == 4  # the attention member's 2x2 grid
    alone = [load_checkpoints(str(p)).generate(_images(), DecodeSettings(method="beam", beam_size=2)) for p in ckpts]
    assert all(not torch.equal(result.logprob, r.logprob) for r in alone)


def test_checkpoints_with_different_vocabularies_are_refused_naming_both(ckpts, tmp_path):
    other = write_checkpoint(tmp_path / "other.ckpt", "lstm", captions=[*CAPTIONS, "a yellow star"])
    with pytest.raises(ValueError) as e:
        load_checkpoints([str(ckpts[0]), str(ckpts[1]), str(other)])
    message = str(e.value)
    assert f"ckpt_path[0]={ckpts[0]} and ckpt_path[2]={other} have different vocabularies" in message
    assert "words" in message and "\n" not in message
    longer = write_checkpoint(tmp_path / "longer.ckpt", "lstm", max_len=12)
    with pytest.raises(ValueError, match=r"max_len 8 vs 12"):
        load_checkpoints([str(ckpts[0]), str(longer)])


def test_a_checkpoint_given_twice_is_refused_also_by_another_path(ckpts, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"ckpt_path\[2\]=.*lstm.ckpt: this checkpoint is in the ensemble already as "
                                         r"ckpt_path\[0\]; .* would count double"):
        load_checkpoints([str(ckpts[0]), str(ckpts[1]), str(ckpts[0])])
    link = tmp_path / "link.ckpt"
    link.symlink_to(ckpts[1])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"\(the same file as ckpt_path\[0\]=attn.ckpt\)") as e:
        load_checkpoints(["attn.ckpt", str(link), "lstm.ckpt"])
    # The list it suggests names each file once, and stays one argument in a shell.
    assert str(e.value).endswith(" Give each checkpoint once: 'ckpt_path=[attn.ckpt,lstm.ckpt]'")


def test_a_missing_or_unreadable_member_is_named_by_its_place(ckpts, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"ckpt_path\[1\]=.*gone.ckpt: no such file"):
        load_checkpoints([str(ckpts[0]), str(tmp_path / "gone.ckpt")])
    notes = tmp_path / "notes.ckpt"
    notes.write_text("not a checkpoint\n")
    with pytest.raises(ValueError, match=r"ckpt_path\[2\]=.*notes.ckpt: not a checkpoint torch can read"):
        load_checkpoints([str(ckpts[0]), str(ckpts[1]), str(notes)])


@pytest.mark.parametrize("value, message", [
    ([], r"ckpt_path=\[\]: an empty list names no checkpoint"),
    ([["a", "b"]], r"ckpt_path\[0\]=\['a', 'b'\]: each member of an ensemble is one checkpoint file"),
    ("", "ckpt_path is not set"),
    (None, "ckpt_path is not set"),
    (3, "ckpt_path=3: give ckpt_path=a.ckpt, or an ensemble"),
])
def test_what_ckpt_path_may_hold(value, message):
    with pytest.raises(ValueError, match=message):
        checkpoint_list(value)


def test_checkpoint_list_takes_hydras_lists():
    cfg = OmegaConf.create({"ckpt_path": ["a.ckpt", "b.ckpt"]})
    assert checkpoint_list(cfg.ckpt_path) == ["a.ckpt", "b.ckpt"]
    assert checkpoint_list("a,b.ckpt") == ["a,b.ckpt"]  # a plain value is one path, commas and all
