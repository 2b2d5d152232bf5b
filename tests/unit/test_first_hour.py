"""A new user's first hour (issue 23): the pieces behind the commands' messages and records,
tested without training (tests/e2e/test_first_hour.py runs the commands)."""

import json
import logging
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from capgen.training.callbacks import BestCheckpoint


def _saved_state(old: Path) -> dict:
    best = str(old / "epoch007-best3.041.ckpt")
    return {"dirpath": str(old), "monitor": "val/CIDEr", "best_model_score": torch.tensor(3.041),
            "best_model_path": best, "best_k_models": {best: torch.tensor(3.041)}, "kth_best_model_path": best,
            "kth_value": torch.tensor(3.041), "last_model_path": str(old / "last.ckpt")}


def test_a_new_run_from_another_runs_checkpoint_forgets_that_runs_best_file(tmp_path):
    # capgen-train ckpt_path=<finished run>/checkpoints/last.ckpt: the new folder has none of its files.
    callback = BestCheckpoint(dirpath=str(tmp_path / "new" / "checkpoints"), monitor="val/CIDEr", mode="max")
    callback.load_state_dict(_saved_state(tmp_path / "old" / "checkpoints"))
    assert callback.best_model_path == ""  # not <new>/checkpoints/epoch007-best3.041.ckpt, which was never written
    assert callback.best_model_score is None and callback.best_k_models == {}
    assert callback.kth_value == torch.tensor(float("-inf"))  # any epoch of the new run can be its best


def test_a_moved_run_keeps_its_best_file(tmp_path):
    new = tmp_path / "moved" / "checkpoints"
    new.mkdir(parents=True)
    (new / "epoch007-best3.041.ckpt").write_bytes(b"")  # the folder was moved with its files
    callback = BestCheckpoint(dirpath=str(new), monitor="val/CIDEr", mode="max")
    callback.load_state_dict(_saved_state(tmp_path / "old" / "checkpoints"))
    assert callback.best_model_path == str(new / "epoch007-best3.041.ckpt")
    assert float(callback.best_model_score) == float(torch.tensor(3.041))
    assert list(callback.best_k_models) == [str(new / "epoch007-best3.041.ckpt")]


def test_a_key_its_constructor_does_not_take_is_named_with_the_close_match():
    from omegaconf import OmegaConf

    from capgen.training.settings import UnknownSetting, check_keys

    node = OmegaConf.create({"_target_": "capgen.models.LSTMDecoder", "_partial_": True, "hiden_dim": 3,
                             "dropout": 0.1})
    with pytest.raises(UnknownSetting, match=r"^model\.decoder\.hiden_dim: .* Did you mean model\.decoder\.hidden_dim\?"):
        check_keys(node, "model.decoder")
    check_keys(OmegaConf.create({"_target_": "capgen.models.LSTMDecoder", "hidden_dim": 3}), "model.decoder")
    nested = OmegaConf.create({"_target_": "capgen.data.datamodule.CaptionDataModule",
                               "source": {"_target_": "capgen.data.shapes.ShapesSource", "sizez": {}}})
    with pytest.raises(UnknownSetting, match=r"^data\.source\.sizez: .* Did you mean data\.source\.sizes\?"):
        check_keys(nested, "data")


def _write_run(run: Path, summary: dict, overrides: list[str]) -> Path:
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("seed: 42\n")
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def test_the_end_of_a_completed_run_names_its_best_checkpoint_and_the_next_commands(tmp_path):
    from capgen.training.next_steps import what_next

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


def test_the_end_of_a_failed_or_interrupted_run_says_what_to_run_next(tmp_path):
    from capgen.training.next_steps import what_next

    failed = _write_run(tmp_path / "failed", {"status": "failed", "error": "ValueError: bad", "traceback": "error.txt"},
                        ["model=lstm", "data.source.sizes={train:8,val:4,test:4}", "ckpt_path='/runs/a b/last.ckpt'"])
    lines = what_next(failed)
    assert lines[0] == f"run folder: {failed} (failed; traceback in {failed / 'error.txt'})"
    assert lines[1] == ("next: fix the cause and run again: capgen-train model=lstm 'data.source.sizes={train:8,val:4,test:4}' "
                        "'ckpt_path=/runs/a b/last.ckpt'")  # as typed: capgen-train quotes paths for Hydra itself
    stopped = _write_run(tmp_path / "stopped", {"status": "interrupted", "signal": "SIGTERM",
                                                "resume": f"capgen-train resume={tmp_path / 'stopped'}"}, [])
    (stopped / "checkpoints").mkdir()
    (stopped / "checkpoints" / "epoch002-best1.250.ckpt").write_bytes(b"")
    assert what_next(stopped)[1:] == ["best checkpoint so far: checkpoints/epoch002-best1.250.ckpt",
                                      f"next: continue it where it stopped: capgen-train resume={stopped}"]
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    assert "ended before writing summary.json" in what_next(unfinished)[1]


def _trainer(epoch: int, **metrics: float) -> SimpleNamespace:
    return SimpleNamespace(sanity_checking=False, is_global_zero=True, current_epoch=epoch,
                           callback_metrics={k.replace("_", "/", 1): torch.tensor(v) for k, v in metrics.items()},
                           checkpoint_callbacks=[])


def test_one_line_per_validation_epoch_with_the_best_so_far(caplog):
    from capgen.training.callbacks import EpochLine

    line = EpochLine()
    with caplog.at_level(logging.INFO, logger="capgen.training.callbacks"):
        line.on_validation_end(_trainer(0, val_CIDEr=0.5, val_loss=3.0, **{"val/BLEU-4": 0.1}), None)
        line.on_validation_end(_trainer(1, val_CIDEr=0.25, val_loss=2.5, **{"val/BLEU-4": 0.2}), None)
    said = [r.getMessage() for r in caplog.records]
    assert re.fullmatch(r"epoch 0: val/CIDEr 0\.500, val/BLEU-4 0\.100, val/loss 3\.000; best val/CIDEr 0\.500 "
                        r"\(epoch 0\); \d+ s", said[0]), said
    assert said[1].startswith("epoch 1: val/CIDEr 0.250, val/BLEU-4 0.200, val/loss 2.500; best val/CIDEr 0.500 (epoch 0)")
    restored = EpochLine()
    restored.load_state_dict(line.state_dict())  # a resumed run goes on from the best so far
    assert restored.best == (0.5, 0)


def test_the_progress_bar_shows_no_version_fragment():
    from capgen.training.callbacks import progress_bar

    logger = SimpleNamespace(version="default", name="tb")
    trainer = SimpleNamespace(loggers=[logger], progress_bar_metrics={"train/loss": 3.5})
    assert progress_bar().get_metrics(trainer, None) == {"train/loss": 3.5}  # no v_num=ault


def test_spice_without_its_models_is_left_out_of_the_default_metrics_with_one_line_and_no_download_advice(
        monkeypatch, tmp_path, caplog):
    from capgen.metrics import captions

    monkeypatch.setattr(captions.shutil, "which", lambda name: "/usr/bin/java")
    monkeypatch.setattr(captions, "_SPICE_MODELS", [tmp_path / "stanford-corenlp-3.6.0.jar"])
    monkeypatch.setattr(captions, "_spice_noted", False)
    with caplog.at_level(logging.INFO, logger="capgen.metrics"):
        first, again = captions.default_metrics(), captions.default_metrics()
    assert first == again == ("BLEU", "METEOR", "ROUGE-L", "CIDEr")
    said = [r.getMessage() for r in caplog.records if "SPICE" in r.getMessage()]
    assert len(said) == 1 and "get_stanford_models" not in said[0] and "download" not in said[0]


def test_splits_drawn_for_custom_data_are_logged_once_with_their_sizes(tmp_path, caplog):
    from capgen.data.custom import CustomSource

    from helpers.fixtures_real import make_custom

    make_custom(tmp_path, "jsonl", n=40, with_split=False)
    fractions = {"train": 0.5, "val": 0.25, "test": 0.25}
    with caplog.at_level(logging.INFO, logger="capgen.data.custom"):
        for split in ("train", "val", "test"):
            CustomSource(tmp_path, split, captions="captions.jsonl", image_dir="images", split_fractions=fractions,
                         split_seed=3)
    said = [r.getMessage() for r in caplog.records if "splits drawn" in r.getMessage()]
    assert len(said) == 1 and said[0].endswith("(split_seed=3): train 20, val 10, test 10 images"), said


def test_compare_on_a_mixed_folder_fits_120_columns_and_lists_failed_runs_apart(tmp_path, capsys):
    from capgen.cli.compare import main as compare_main

    def run(name: str, overrides: list[str], summary: dict | None) -> None:
        path = tmp_path / "train" / name
        (path / ".hydra").mkdir(parents=True)
        (path / ".hydra" / "config.yaml").write_text("seed: 42\n")
        (path / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
        if summary is not None:
            (path / "summary.json").write_text(json.dumps(summary))

    scores = {"val/CIDEr": 2.91, "val/BLEU-4": 0.61, "test/CIDEr": 2.87, "test/BLEU-4": 0.6}
    long_root = "data.root=/mnt/shared/datasets/coco2014/a/very/long/path/that/goes/on/and/on"
    for job, (model, seed) in enumerate([("attn", 1), ("attn", 2), ("lstm", 1), ("lstm", 2)]):
        overrides = [f"model={model}", f"seed={seed}", "model.decoder.hidden_dim=512", long_root,
                     "trainer.max_epochs=2"]
        run(f"multirun_2025-01-01_12-00-00/{job}_" + ",".join(overrides).replace("/", "_"), overrides,
            {"status": "completed", "metrics": {k: v - 0.1 * job for k, v in scores.items()}})
    run("2025-01-02_09-00-00", ["model.decoder.hidden_dim=1024", long_root.replace("very", "rather"), "trainer.max_epochs=2"],
        {"status": "completed", "metrics": scores})
    run("2025-01-03_09-00-00", ["+model.decoder.hiden_dim=3"],
        {"status": "failed", "error": "TypeError: " + "AttentionDecoder.__init__() got an unexpected keyword " * 5,
         "traceback": "error.txt"})

    compare_main([str(tmp_path / "train")])
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= 120, "\n".join(lines)
    header = next(line for line in lines if " status " in line).split()
    # Only what differs among the rows shown: not the failed run's misspelt key, not max_epochs.
    assert header[:4] == ["data.root", "model", "hidden_dim", "seed"] and "hiden_dim" not in "\n".join(lines[:-2])
    assert lines[0] == "all runs: trainer.max_epochs=2"
    # The long paths shown from where they differ: their shared start is cut, not their difference.
    assert [row.split()[0][:7] for row in lines[3:6]] == ["…rather", "…very/l", "…very/l"]
    assert "columns: hidden_dim = model.decoder.hidden_dim" in lines
    failed = lines.index("runs that did not complete:")
    assert lines[failed + 1].startswith("  2025-01-03_09-00-00: failed: TypeError: AttentionDecoder") and \
        lines[failed + 1].endswith("…")
    assert not any("failed" in line for line in lines[:failed])  # not a row of the table
    rows = lines[lines.index(next(line for line in lines if " status " in line)) + 1:failed]
    assert len(rows) == 3 and all("completed" in row for row in rows)  # attn (2 seeds), lstm (2 seeds), one run


def _vocab():
    from capgen.vocab import Vocabulary

    return Vocabulary.build(["a red circle", "a blue square"], max_len=3)


def test_a_caption_the_decoder_did_not_end_is_cut_and_shown_marked():
    from capgen.vocab import CUT_MARK, shown

    vocab = _vocab()
    red, circle = vocab.stoi["red"], vocab.stoi["circle"]
    assert vocab.is_cut([red, circle, red])  # max_len words, no <end>
    assert not vocab.is_cut([red, circle, vocab.end_id]) and not vocab.is_cut([vocab.end_id, 0, 0])
    assert shown("red circle red", True) == f"red circle red {CUT_MARK}" and shown("red circle", False) == "red circle"


def test_capgen_caption_and_the_demo_mark_a_cut_caption():
    from capgen.demo.page import caption_html
    from capgen.models.decoding import DecodeResult
    from capgen.training.caption import caption_row
    from capgen.vocab import CUT_MARK

    vocab = _vocab()
    red, circle = vocab.stoi["red"], vocab.stoi["circle"]
    tokens = torch.tensor([[red, circle, red], [red, vocab.end_id, 0]])  # (B=2, L=3): cut, ended
    result = DecodeResult(tokens, torch.zeros(2), torch.zeros(2, 3), None)
    cut, _ = caption_row(vocab, result, 0)
    ended, _ = caption_row(vocab, result, 1)
    assert cut["cut"] is True and "cut" not in ended
    assert CUT_MARK in caption_html({**cut, "decode": "greedy"}) and CUT_MARK not in caption_html({**ended, "decode": "greedy"})


def test_scored_captions_say_which_were_cut():
    from capgen.metrics import CaptionScores

    vocab = _vocab()
    red, circle = vocab.stoi["red"], vocab.stoi["circle"]
    scores = CaptionScores(vocab, metrics=("BLEU",))
    scores.update(torch.tensor([7, 8]), torch.tensor([[red, circle, red, 0], [red, circle, vocab.end_id, 0]]))
    rows = {r["image_id"]: r for r in scores.captions()}
    assert rows[7].get("cut") is True and "cut" not in rows[8]


def test_what_a_checkpoint_was_trained_on_decides_the_photograph_note():
    from capgen.training.provenance import trained_on

    shapes = trained_on({"training_data": {"data": "shapes"}, "epoch": 7, "global_step": 20000})
    assert shapes.describe() == "shapes, 8 epochs" and "synthetic shapes data" in shapes.photo_note("a.ckpt")
    brief = trained_on({"training_data": {"data": "coco2014"}, "epoch": 0, "global_step": 40})
    assert "only 40 optimizer steps" in brief.photo_note("b.ckpt")
    assert trained_on({"training_data": {"data": "coco2014"}, "epoch": 29, "global_step": 300000}).photo_note("c") is None
    older = trained_on({"epoch": 1, "global_step": 5000}, run_data="shapes")  # no record: its run folder's data config
    assert older.synthetic and older.describe() == "shapes, 2 epochs"


def test_the_end_of_a_run_without_a_best_checkpoint_names_only_commands_that_work(tmp_path):
    from capgen.training.next_steps import what_next

    quick = _write_run(tmp_path / "quick", {"status": "completed", "best_checkpoint": None, "metrics": {}}, [])
    assert what_next(quick)[1:] == ["no checkpoint was written (trainer.fast_dev_run writes none)", "next:",
                                    f"  tensorboard --logdir {quick}    # curves, sample captions, attention"]
    (quick / "checkpoints").mkdir()
    (quick / "checkpoints" / "last.ckpt").write_bytes(b"")
    text = "\n".join(what_next(quick))
    last = quick / "checkpoints" / "last.ckpt"
    assert f"capgen-eval ckpt_path={last}" in text and f"capgen-demo ckpt_path={last}" in text and "run=" not in text


def test_the_switch_to_self_critical_training_is_one_log_line(caplog):
    from capgen.models import Captioner, LSTMDecoder, SmallCNN
    from capgen.training.module import CaptioningModule

    vocab = _vocab()
    net = Captioner(SmallCNN(widths=(4,), grid=2), lambda **kw: LSTMDecoder(**kw, embed_dim=5, hidden_dim=7),
                    vocab_size=len(vocab))
    module = CaptioningModule(net, vocab, objective={"name": "scst", "scst": {"from_epoch": 2}})
    module.set_train_references({1: ["a red circle"], 2: ["a blue square"]})
    with caplog.at_level(logging.INFO, logger="capgen.training.module"):
        module.on_train_start()
        for epoch in range(4):
            module._trainer = SimpleNamespace(current_epoch=epoch)  # what Lightning's current_epoch reads
            module.on_train_epoch_start()
        module.on_train_start()  # resumed at epoch 3, past the switch: said once more, at the start
        module.on_train_epoch_start()
    said = [r.getMessage() for r in caplog.records if "self-critical" in r.getMessage()]
    assert [s.split(":")[0] for s in said] == ["epoch 2", "epoch 3"], said
    assert "SCST) from epoch 2 on, after 2 cross-entropy epoch(s)" in said[0] and "lr 5e-05" in said[0]


def test_a_split_read_from_a_cache_is_one_log_line(make_cfg, tmp_path, monkeypatch, caplog):
    import hydra

    from capgen.data import datamodule

    class Cache:  # stands in for a usable capgen-prepare cache (tests/unit/test_cache.py tests the real one)
        def __init__(self, folder, split, description, vocabulary):
            self.split = split

        def __len__(self) -> int:
            return 5

    monkeypatch.setattr(datamodule, "CachedImages", Cache)
    cfg = make_cfg(f"data.cache_dir={tmp_path / 'cache'}")
    data = hydra.utils.instantiate(cfg.data)
    with caplog.at_level(logging.INFO, logger="capgen.data.datamodule"):
        data.source("val")
        data.source("val")
    said = [r.getMessage() for r in caplog.records]
    assert said == [f"the val split: 5 images from the cache in {tmp_path / 'cache'}"]
