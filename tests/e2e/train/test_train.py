"""End-to-end training through the Hydra config, on tiny shapes data."""

import json
import math
from pathlib import Path

import hydra
import lightning as L
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from capgen.commands.train.fit import train
from capgen.lightning.module import CaptioningModule


@pytest.mark.parametrize("run", ["tiny_rnn_run", "tiny_lstm_run", "tiny_run", "tiny_transformer_run"])
def test_each_model_trains_validates_and_tests_its_best_checkpoint(request, run):
    """The session's run of each decoder (model=rnn, lstm, attn, transformer): finite training
    loss, val and test scores in summary.json, and the files a run leaves."""
    run = request.getfixturevalue(run)
    record = json.loads((run / "summary.json").read_text())
    metrics = record["metrics"]
    assert record["status"] == "completed" and math.isfinite(metrics["train/loss"])
    for name in ("BLEU-1", "BLEU-4", "CIDEr"):
        assert 0 <= metrics[f"val/{name}"] <= 10 and 0 <= metrics[f"test/{name}"] <= 10
    assert (run / "vocab.json").is_file()
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert "last.ckpt" in ckpts and f"checkpoints/{ckpts[0]}" == record["best_checkpoint"] and "-best" in ckpts[0]
    # The cheap test config lists test_metrics on the command line: a ListConfig hyper-parameter,
    # which the checkpoint must still load with weights_only (as the test step after fitting does).
    module = CaptioningModule.from_checkpoint(str(run / "checkpoints" / "last.ckpt"))
    assert len(module.vocab) == module.net.decoder.vocab_size


@pytest.mark.parametrize("run", ["tiny_run", "tiny_transformer_run"])
def test_a_run_logs_curves_captions_and_attention_figures_to_tensorboard(request, run):
    """The session's attention runs (the attention LSTM, the Transformer's cross-attention) keep
    capgen-train's default logger and sample figures."""
    run = request.getfixturevalue(run)
    events = EventAccumulator(str(run / "tb" / "default"), size_guidance={"images": 0, "tensors": 0}).Reload()
    tags = events.Tags()
    assert {"train/loss", "val/loss", "val/BLEU-4", "val/CIDEr", "test/CIDEr"} <= set(tags["scalars"])
    assert "val_attention/0" in tags["images"]
    assert any(t.startswith("val/captions") for t in tags["tensors"])


def test_resume_from_last_checkpoint_continues_from_saved_epoch(tiny_lstm_run, make_cfg):
    last = tiny_lstm_run / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)
    assert saved["epoch"] == 0 and saved["global_step"] == 3  # 1 epoch x 3 batches

    resumed = make_cfg("model=lstm", "trainer.max_epochs=2", "test=false", f"ckpt_path={last}", name="second")
    train(resumed)
    after = torch.load(Path(resumed.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    assert after["epoch"] == 1 and after["global_step"] == 6  # one more epoch, not two
    assert after["vocab"] == saved["vocab"]


def test_short_overfit_run_drives_loss_down(make_cfg):
    cfg = make_cfg("model=attn", "data.source.sizes.train=8", "data.batch_size=8", "model.decoder.dropout=0.0")
    L.seed_everything(0)
    dm = hydra.utils.instantiate(cfg.data)
    from capgen.models import build_captioner

    net_cfg = {"encoder": cfg.model.encoder, "decoder": cfg.model.decoder}
    module = hydra.utils.instantiate(cfg.model.module, net=build_captioner(net_cfg, len(dm.vocab)), vocab=dm.vocab, _recursive_=False)
    batch = next(iter(dm.train_dataloader()))

    def xent():
        module.eval()
        with torch.no_grad():
            return module._loss(batch)[1].item()

    before = xent()
    module.train()
    # The same batch 60 times, as one epoch of 60 steps (60 one-step epochs cost Lightning's
    # per-epoch work 60 times for the same updates).
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader([batch] * 60, batch_size=None))
    after = xent()
    assert after < 0.2 * before, (before, after)


def test_mixed_precision_through_trainer_precision(make_cfg):
    """bf16 autocast (the GPU default) also runs on the CPU, so CI covers the mixed-precision path."""
    cfg = make_cfg("model=attn", "trainer.precision=bf16-mixed", "+trainer.fast_dev_run=2")
    metrics = train(cfg)
    assert math.isfinite(metrics["train/loss"]) and math.isfinite(metrics["test/CIDEr"])


def test_bad_beam_size_fails_at_start_up(make_cfg):
    # The module's own ValueError, naming the setting, not Hydra's wrapper around it.
    with pytest.raises(ValueError, match=r"^model\.module\.test\.decode\.beam_size=0: a beam holds at least 1 caption\.$"):
        train(make_cfg("model.module.test.decode.beam_size=0"))


def test_test_split_is_decoded_with_the_test_beam(make_cfg, monkeypatch):
    from capgen.models.captioner import Captioner

    seen = []
    original = Captioner.decode

    def spy(self, images, settings, *args, **kw):
        seen.append((settings.method, settings.beam_size))
        return original(self, images, settings, *args, **kw)

    monkeypatch.setattr(Captioner, "decode", spy)
    train(make_cfg("model=lstm", "model.module.test.decode.beam_size=4", "test=true"))
    assert ("greedy", 1) in seen and ("beam", 4) in seen  # validation greedy, test with the beam


def test_sampled_validation_and_an_n_best_test_leave_training_as_it_was(make_cfg, tmp_path):
    """Validation may sample (its own seeded generator, not the global one: the run trains
    exactly as with greedy validation) and the test may keep the n best: each image's first
    is scored, and summary.json says how the test decoded."""
    import json

    greedy = train(make_cfg("model=lstm", "trainer.max_epochs=2", "test=false", name="greedy"))
    cfg = make_cfg("model=lstm", "trainer.max_epochs=2", "model.module.val.decode.method=sample",
                   "model.module.val.decode.n_best=3", "model.module.val.decode.top_p=0.8",
                   "model.module.test.decode.n_best=2", "model.module.test.decode.no_repeat_ngram_size=2", name="sampled")
    sampled = train(cfg)
    weights = [torch.load(Path(tmp_path) / run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
               for run in ("greedy", "sampled")]
    assert sampled["train/loss"] == greedy["train/loss"] and all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert sampled["val/CIDEr"] != greedy["val/CIDEr"]  # the captions scored were drawn
    assert math.isfinite(sampled["test/CIDEr"])
    summary = json.loads((Path(cfg.paths.output_dir) / "summary.json").read_text())
    assert (summary["test_decode"]["method"], summary["test_decode"]["n_best"]) == ("beam", 2)
    assert summary["test_decode"]["no_repeat_ngram_size"] == 2 and summary["metrics"]["test/CIDEr"] == sampled["test/CIDEr"]


def test_the_initial_weights_depend_on_the_seed_alone(make_cfg, monkeypatch):
    """Nothing draws from the seeded generator between seeding and building the network (an
    earlier version built a throwaway encoder while handing its config to the datamodule).
    Start-up only: the run stops where the network is built."""
    import lightning as L

    import capgen.commands.train.fit as train_module

    class Built(Exception):
        pass

    seen = []

    def recording(net_config, vocab_size):
        seen.append(torch.get_rng_state())
        raise Built

    monkeypatch.setattr(train_module, "build_captioner", recording)
    cfg = make_cfg("test=false")
    with pytest.raises(Built):
        train(cfg)
    L.seed_everything(cfg.seed)
    assert torch.equal(seen[0], torch.get_rng_state())
