"""Decode settings as the commands take them (capgen.config.decode_group): the `decode` group laid
over the run's test decode, and presets; the module's own val/test decode settings."""

import dataclasses

import pytest
from hydra import compose, initialize_config_dir

from capgen.config import CONF_DIR
from capgen.config.decode_group import command_settings
from capgen.lightning.module import CaptioningModule
from capgen.models.search import DecodeSettings

RUN = DecodeSettings(method="beam", beam_size=5, length_penalty=0.7, min_len=2, max_len=12)  # a run's test decode


def settings(command, *overrides, run=RUN, vocab_max_len=20):
    extra = ["images=x"] if command == "caption" else []
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(command, overrides=["ckpt_path=x", *extra, *overrides])
    return command_settings(cfg, run, vocab_max_len)


def test_eval_decodes_as_the_run_tested_and_decode_keys_change_only_themselves():
    assert settings("eval") == RUN
    assert settings("eval", "decode.n_best=3", "decode.suppress_unk=true") == dataclasses.replace(
        RUN, n_best=3, suppress_unk=True)
    assert settings("eval", "decode.method=greedy", "decode.length_penalty=0") == dataclasses.replace(
        RUN, method="greedy", length_penalty=0.0)
    # null max_len everywhere: the run's, itself null for the vocabulary's
    assert settings("eval", run=DecodeSettings()).max_len == 20


def test_a_preset_replaces_the_runs_settings_but_its_max_len():
    assert settings("eval", "decode=sample", "decode.top_p=0.9") == DecodeSettings(method="sample", top_p=0.9, max_len=12)
    assert settings("eval", "decode=diverse_beam") == DecodeSettings(
        method="diverse_beam", beam_size=6, groups=3, diversity_strength=0.5, max_len=12)
    assert settings("eval", "decode=greedy") == DecodeSettings(max_len=12)


def test_caption_decodes_with_a_beam_of_3_unless_told():
    assert settings("caption") == DecodeSettings(method="beam", beam_size=3, max_len=12)
    assert settings("caption", "decode=run") == RUN


def test_a_beam_size_that_would_change_nothing_is_refused():
    with pytest.raises(ValueError, match=r"^decode\.beam_size=4: decode\.method=greedy .* give decode\.method=beam"):
        settings("eval", "decode.beam_size=4", run=DecodeSettings())
    with pytest.raises(ValueError, match=r"^decode\.beam_size=4: decode\.method=sample"):
        settings("caption", "decode=sample", "decode.beam_size=4")
    assert settings("eval", "decode.beam_size=4", "decode.method=beam", run=DecodeSettings()).beam_size == 4


def test_the_module_checks_its_decode_settings_at_start_up():
    from capgen.models import Captioner, LSTMDecoder, SmallCNN
    from capgen.vocab import Vocabulary

    vocab = Vocabulary(["<pad>", "<start>", "<end>", "<unk>", "a", "b"], max_len=6)
    net = Captioner(SmallCNN(grid=2), LSTMDecoder, vocab_size=len(vocab))
    module = CaptioningModule(net, vocab, val={"decode": {"method": "sample", "n_best": 2}}, test={"decode": {"max_len": 4}})
    assert module.decoding == {"val": DecodeSettings(method="sample", n_best=2, max_len=6), "test": DecodeSettings(max_len=4)}
    assert module.hparams.val["decode"] == dataclasses.asdict(DecodeSettings(method="sample", n_best=2))  # plain data
    assert module.hparams.val["metrics"] == ("BLEU", "CIDEr")  # a stage's keys not given keep its defaults
    with pytest.raises(ValueError, match=r"^model\.module\.val\.decode\.top_k=-1: give k >= 1"):
        CaptioningModule(net, vocab, val={"decode": {"method": "sample", "top_k": -1}})
    with pytest.raises(ValueError, match=r"^model\.module\.test\.decode\.max_len=7: the model was trained on captions of "
                                         r"at most 6 words"):
        CaptioningModule(net, vocab, test={"decode": {"method": "beam", "beam_size": 2, "max_len": 7}})
