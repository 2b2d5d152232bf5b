"""capgen-eval on a tiny shapes attention run trained once per session (the tiny_run and ckpt
fixtures, tests/conftest.py)."""

import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider

from capgen.commands.eval.evaluate import metrics_table
from capgen.commands.eval.statistics import corpus_statistics
from capgen.commands.prepare import prepare
from capgen.config.argv import with_run_data_choice
from capgen.data.encoder_weights import EncoderWeightsMismatch
from capgen.data.shapes import ShapesSource
from capgen.lightning.inference import load_module
from capgen.metrics.captions import score_captions
from capgen.models.search import DecodeSettings
from capgen.runs.tested import TEST_CAPTIONS
from capgen.tokenizer import tokenize

from helpers import procs
from helpers.commands import run_eval
from helpers.runs import compose_command, read_jsonl


# ----- capgen-eval --------------------------------------------------------------------------
def test_eval_writes_metrics_captions_and_coco_results_for_the_runs_test_split(ckpt, tmp_path):
    report = run_eval(tmp_path, f"ckpt_path={ckpt}", "decode=greedy")
    assert report["split"] == "test" and report["images"] == 16  # the run's 16, not the default 500

    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for name in ("BLEU-1", "BLEU-4", "CIDEr"):
        assert isinstance(metrics[name], float) and 0 <= metrics[name] <= 10
    # An attention model on shapes: grounding is reported (null when no word named an object).
    assert {"grounding", "grounding_chance", "grounding_words"} <= set(metrics)
    if metrics["grounding_words"]:
        assert 0 <= metrics["grounding"] <= 1 and 0 < metrics["grounding_chance"] < 1

    expected_ids = {ShapesSource("test", sizes={"test": 16}).image_id(i) for i in range(16)}
    results = json.loads((tmp_path / "results.json").read_text())
    assert isinstance(results, list) and len(results) == 16
    assert all(set(r) == {"image_id", "caption"} and type(r["image_id"]) is int and isinstance(r["caption"], str)
               for r in results)
    assert sorted(r["image_id"] for r in results) == sorted(expected_ids)  # every image exactly once

    rows = [json.loads(line) for line in (tmp_path / "captions.jsonl").read_text().splitlines()]
    assert [r["image_id"] for r in rows] == [r["image_id"] for r in results]
    for r in rows:  # "cut": true marks a caption cut at the length cap (the tiny model rarely ends one)
        assert set(r) - {"cut"} == {"image_id", "caption", "references", "logprob", "BLEU-4", "CIDEr"}
        assert len(r["references"]) == 5 and r["logprob"] <= 0
    assert report["cut_captions"] == sum(r.get("cut", False) for r in rows)
    assert "val: 12" in (tmp_path / "data.yaml").read_text()  # the run's data config, saved with the scores

    # Each image's BLEU-4 and CIDEr-D are pycocoevalcap's per-image scores of the same captions.
    gts = {r["image_id"]: [" ".join(tokenize(c)) for c in r["references"]] for r in rows}
    res = {r["image_id"]: [" ".join(tokenize(r["caption"]))] for r in rows}
    _, bleu = Bleu(4).compute_score(gts, res, verbose=0)
    cider, per_image_cider = Cider().compute_score(gts, res)
    assert [r["BLEU-4"] for r in rows] == bleu[3] and [r["CIDEr"] for r in rows] == per_image_cider.tolist()
    assert metrics["CIDEr"] == pytest.approx(cider, rel=1e-6)  # logged through Lightning: float32

    # Statistics of the captions; novel against the run's 64 training images' references.
    words = [tokenize(r["caption"]) for r in rows]
    training = ShapesSource("train", sizes={"train": 64})
    seen = {" ".join(tokenize(c)) for i in range(64) for c in training.captions(i)}
    assert metrics["vocabulary"] == len({w for t in words for w in t})
    assert metrics["mean_length"] == pytest.approx(sum(map(len, words)) / 16)
    assert metrics["unique_percent"] == pytest.approx(100 * len({" ".join(t) for t in words}) / 16)
    assert metrics["novel_percent"] == pytest.approx(100 * sum(" ".join(t) not in seen for t in words) / 16)
    assert "novel_note" not in metrics


def test_the_runs_own_test_wrote_each_images_caption_and_scores_as_eval_gives_them(tiny_run, tmp_path):
    # capgen-train tested its best checkpoint on the 16 test images; capgen-eval run= scores the same
    # checkpoint with the same beam: the same captions and per-image scores.
    trained = [json.loads(line) for line in (tiny_run / TEST_CAPTIONS).read_text().splitlines()]
    run_eval(tmp_path, f"run={tiny_run}")
    evaluated = [json.loads(line) for line in (tmp_path / "captions.jsonl").read_text().splitlines()]
    assert len(trained) == 16 and all(set(r) == {"image_id", "caption", "BLEU-4", "CIDEr"} for r in trained)
    assert trained == [{k: r[k] for k in ("image_id", "caption", "BLEU-4", "CIDEr")} for r in evaluated]
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert summary["metrics"]["test/CIDEr"] == pytest.approx(sum(r["CIDEr"] for r in trained) / 16)


def test_novel_percent_is_left_out_with_the_reason_when_the_training_split_cannot_be_read(ckpt, tmp_path):
    class NoTrainingSplit:
        def references(self, split):
            raise FileNotFoundError("annotation file captions_train2014.json not found")

    rows = [{"image_id": 1, "caption": "a red circle"}, {"image_id": 2, "caption": "a blue square"}]
    stats = corpus_statistics(rows, NoTrainingSplit(), "python")
    assert stats["novel_percent"] is None and stats["vocabulary"] == 5
    assert stats["novel_note"] == "the training split could not be read (annotation file captions_train2014.json not found)"
    table = metrics_table({"checkpoint": ckpt, "split": "test", "images": 2,
                           "decode": dataclasses.asdict(DecodeSettings(method="greedy")), **stats})
    assert "novel_percent   n/a  (the training split could not be read (annotation file" in table


def test_eval_split_and_data_overrides_change_the_runs_settings(ckpt, tmp_path):
    assert run_eval(tmp_path / "val", f"ckpt_path={ckpt}", "decode=greedy", "split=val")["images"] == 12
    report = run_eval(tmp_path / "small", f"ckpt_path={ckpt}", "decode=greedy", "data.source.sizes.test=5")
    assert report["images"] == 5
    data = OmegaConf.load(tmp_path / "small" / "data.yaml")
    assert data.source.sizes == {"train": 64, "val": 12, "test": 5}  # the rest is still the run's
    assert data.batch_size == 8  # debug=fast's, as in the run (shapes.yaml says 64)


def test_eval_of_an_empty_split_is_refused_naming_it(ckpt, tmp_path):
    with pytest.raises(ValueError, match=r"^split=test: the test split has no images .* nothing to score.* \(split=val\)\.$"):
        run_eval(tmp_path / "none", f"ckpt_path={ckpt}", "decode=greedy", "data.source.sizes.test=0")


def test_eval_without_a_saved_run_config_uses_the_data_the_checkpoint_records(ckpt, tmp_path):
    lone = tmp_path / "lone.ckpt"  # a checkpoint away from its run dir
    lone.write_bytes(Path(ckpt).read_bytes())
    run_eval(tmp_path / "out", f"ckpt_path={lone}", "decode=greedy", "data.source.sizes.test=3")
    data = OmegaConf.load(tmp_path / "out" / "data.yaml")
    # The run's (not conf/data/shapes.yaml's 10000/500/500 and batch size 64), the override on top.
    assert data.source.sizes == {"train": 64, "val": 12, "test": 3} and data.batch_size == 8
    assert len(json.loads((tmp_path / "out" / "results.json").read_text())) == 3


def test_eval_runs_the_encoder_in_the_precision_asked_for(ckpt, tmp_path, caplog):
    """encoder_precision reaches the checkpoint's encoder (capgen-caption and the demo load it the
    same way): bf16 forced on the run's SmallCNN, which auto leaves to the caller as it trains."""
    with caplog.at_level(logging.INFO, logger="capgen.lightning.hardware"):
        report = run_eval(tmp_path / "out", f"ckpt_path={ckpt}", "decode=greedy", "data.source.sizes.test=3",
                          "encoder_precision=bf16", "allow_slow_bf16=true")
    assert report["images"] == 3
    assert "encoder precision: bf16 autocast (encoder_precision=bf16, on cpu: asked for" in caplog.text
    with pytest.raises(ValueError, match="encoder_precision='half'"):
        run_eval(tmp_path / "bad", f"ckpt_path={ckpt}", "encoder_precision=half")
    assert not (tmp_path / "bad").exists()


def test_eval_refuses_features_made_by_other_weights_of_the_checkpoints_encoder(ckpt, tmp_path):
    """The run's small_cnn trained with its decoder on images; capgen-prepare's features come from
    a random initialisation of the same encoder config. Scored on them, a checkpoint lost a third
    of its CIDEr without a word (QA report-eval, item 3): now refused, with the fix."""
    cache = tmp_path / "cache"
    prepare(compose_command("prepare", f"cache_dir={cache}", "features=true", "data.source.sizes={train:64,val:12,test:16}"))
    with pytest.raises(EncoderWeightsMismatch) as refused:
        run_eval(tmp_path / "out", f"ckpt_path={ckpt}", f"data.cache_dir={cache}", "data.use_features=true")
    message = str(refused.value)
    assert message.startswith(f"data.use_features=true with data.cache_dir={cache}: the features in features_test.json ")
    assert f"other weights than the checkpoint {ckpt} (the same encoder config" in message
    assert message.endswith("trained with the decoder on images, and capgen-prepare makes features only from an "
                            "encoder config, never from a checkpoint's weights: score it on images with "
                            "data.use_features=false (data.cache_dir's image cache still serves).")
    assert not (tmp_path / "out" / "metrics.json").exists()
    report = run_eval(tmp_path / "images", f"ckpt_path={ckpt}", f"data.cache_dir={cache}", "decode=greedy")
    assert report["images"] == 16  # the same cache's images serve
    # An empty split is named as such, before its (unmade) feature cache is checked.
    with pytest.raises(ValueError, match=r"^split=test: the test split has no images"):
        run_eval(tmp_path / "empty", f"ckpt_path={ckpt}", f"data.cache_dir={cache}", "data.use_features=true",
                 "data.source.sizes.test=0")


def test_eval_refuses_a_data_key_the_runs_config_does_not_have(tiny_run, tmp_path):
    # A run whose saved data config lacks a key today's shapes.yaml has (an older run, say).
    run = tmp_path / "old_run"
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes((tiny_run / "checkpoints" / "last.ckpt").read_bytes())
    (run / ".hydra" / "hydra.yaml").write_bytes((tiny_run / ".hydra" / "hydra.yaml").read_bytes())
    saved = OmegaConf.load(tiny_run / ".hydra" / "config.yaml")
    del saved.data["cache_dir"]
    OmegaConf.save(saved, run / ".hydra" / "config.yaml")
    with pytest.raises(ValueError, match=r"could not apply data\.cache_dir='?/x'? to the run's saved data config"):
        run_eval(tmp_path / "out", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "data.cache_dir=/x")


def test_eval_refuses_a_runs_relative_data_path_from_another_working_directory(tiny_run, tmp_path, monkeypatch):
    """The run's data.root=pets, saved as typed, names another folder (or none) from elsewhere:
    refused, with the two commands that work, as resume= is (tests/e2e/train/test_resume_faults.py)."""
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes((tiny_run / "checkpoints" / "last.ckpt").read_bytes())
    started_in = tmp_path / "started_in"
    OmegaConf.save(OmegaConf.create({"hydra": {"runtime": {"cwd": str(started_in), "choices": {"data": "shapes"}}}}),
                   run / ".hydra" / "hydra.yaml")
    saved = OmegaConf.load(tiny_run / ".hydra" / "config.yaml")
    saved.data.cache_dir = "caches/shapes"  # relative: what the run read from its own directory
    OmegaConf.save(saved, run / ".hydra" / "config.yaml")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    with pytest.raises(ValueError) as err:
        run_eval(tmp_path / "out", "ckpt_path=../run/checkpoints/last.ckpt")  # relative, as typed
    message = str(err.value)
    assert f"the run was started in {started_in}, and its data.cache_dir=caches/shapes is relative" in message
    # The command to run from the run's directory names the checkpoint in full: relative, it would name nothing there.
    assert f"cd {started_in} && capgen-eval ckpt_path={run / 'checkpoints' / 'last.ckpt'})" in message
    assert f"data.cache_dir={started_in / 'caches' / 'shapes'}" in message
    # Given in full on the command line, or from the run's own directory, it is read.
    monkeypatch.chdir(tmp_path)
    run_eval(tmp_path / "out2", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "data.cache_dir=null", "split=val",
             "data.source.sizes.val=4")


def test_run_data_choice_is_added_so_overrides_are_checked_against_the_runs_data_config(tmp_path):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    OmegaConf.save(OmegaConf.create({"data": {}}), run / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": {"runtime": {"choices": {"data": "coco2014"}}}}), run / ".hydra" / "hydra.yaml")
    ckpt = str(run / "checkpoints" / "last.ckpt")
    assert with_run_data_choice([f"ckpt_path={ckpt}", "data.root=/x"]) == [f"ckpt_path={ckpt}", "data.root=/x", "data=coco2014"]
    assert with_run_data_choice([f"ckpt_path={ckpt}", "data=shapes"]) == [f"ckpt_path={ckpt}", "data=shapes"]
    assert with_run_data_choice(["ckpt_path=/no/run/x.ckpt"]) == ["ckpt_path=/no/run/x.ckpt"]


def test_eval_errors_name_the_checkpoint_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.ckpt: no such file"):
        run_eval(tmp_path, f"ckpt_path={tmp_path / 'missing.ckpt'}")
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(ValueError, match="notes.ckpt: not a checkpoint torch can read"):
        run_eval(tmp_path, f"ckpt_path={text}")
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}, "epoch": 3}, foreign)  # e.g. another project's Lightning checkpoint
    with pytest.raises(ValueError, match="foreign.ckpt: not a capgen checkpoint"):
        run_eval(tmp_path, f"ckpt_path={foreign}")


def test_capgen_eval_command_prints_scores_and_its_output_dir(ckpt, tmp_path):
    args = [f"ckpt_path={ckpt}", "data.source.sizes.test=4", "metrics=[BLEU,CIDEr]"]
    done = procs.run([str(Path(sys.executable).parent / "capgen-eval"), *args],
                     cwd=tmp_path, env={**os.environ, "HYDRA_FULL_ERROR": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "CIDEr" in done.stdout and "(4 images, beam 3)" in done.stdout  # the run's test decode
    (out,) = (tmp_path / "outputs" / "eval").iterdir()  # Hydra's run dir, under the working directory
    assert str(out) in done.stdout
    assert len(json.loads((out / "results.json").read_text())) == 4


# ----- decoding controls (capgen.config.decode_group) ----------------------------------------------
def test_the_runs_test_decode_is_recorded_by_training_and_is_evals_default(tiny_run, ckpt, tmp_path):
    max_len = load_module(ckpt).vocab.max_len
    expected = dataclasses.asdict(DecodeSettings(method="beam", beam_size=3, max_len=max_len))
    assert json.loads((tiny_run / "summary.json").read_text())["test_decode"] == expected  # capgen-train's test
    report = run_eval(tmp_path, f"ckpt_path={ckpt}")
    assert report["decode"] == expected == json.loads((tmp_path / "metrics.json").read_text())["decode"]


def test_eval_decode_overrides_n_best_and_constraints(ckpt, tmp_path):
    """decode.* on top of the run's beam 3: the settings land in metrics.json, every image has
    its n best in captions.jsonl, and the scores are those of each image's first caption."""
    args = ["decode.beam_size=4", "decode.n_best=3", "decode.min_len=3", "decode.no_repeat_ngram_size=1",
            "decode.suppress_unk=true", "decode.max_len=8"]
    report = run_eval(tmp_path, f"ckpt_path={ckpt}", *args)
    expected = DecodeSettings(method="beam", beam_size=4, n_best=3, min_len=3, no_repeat_ngram_size=1,
                              suppress_unk=True, max_len=8)
    assert report["decode"] == dataclasses.asdict(expected)
    assert json.loads((tmp_path / "metrics.json").read_text())["decode"] == report["decode"]

    rows = read_jsonl(tmp_path / "captions.jsonl")
    diversity = {"Div-1", "Div-2", "mBLEU-4", "self-CIDEr"}  # of each image's n-best (capgen.metrics.diversity)
    assert len(rows) == 16 and all(set(r) - {"cut"} == {"image_id", "caption", "references", "logprob", "BLEU-4", "CIDEr",
                                                        "captions", "logprobs", *diversity} for r in rows)
    assert diversity <= set(report) and all(0 <= report[k] for k in diversity)
    for r in rows:
        assert len(r["captions"]) == 3 and r["captions"][0] == r["caption"] and r["logprobs"][0] == r["logprob"]
        assert r["logprobs"] == sorted(r["logprobs"], reverse=True)  # best first (no length penalty)
        for caption in r["captions"]:
            words = caption.split()
            assert 3 <= len(words) <= 8 and len(set(words)) == len(words) and "<unk>" not in words
    results = json.loads((tmp_path / "results.json").read_text())
    assert {r["image_id"]: r["caption"] for r in results} == {r["image_id"]: r["caption"] for r in rows}
    # the scores are the official ones of the first captions
    first = {r["image_id"]: r["caption"] for r in rows}
    official = score_captions(first, {r["image_id"]: r["references"] for r in rows}, metrics=("BLEU", "CIDEr"))
    assert report["CIDEr"] == pytest.approx(official["CIDEr"], abs=1e-9)
    assert report["BLEU-4"] == pytest.approx(official["BLEU-4"], abs=1e-9)


def test_eval_sampling_preset_is_reproducible(ckpt, tmp_path):
    args = [f"ckpt_path={ckpt}", "decode=sample", "decode.n_best=4", "decode.top_k=5", "decode.temperature=1.5",
            "decode.seed=3"]
    a = run_eval(tmp_path / "a", *args)
    b = run_eval(tmp_path / "b", *args)
    assert a["decode"]["method"] == "sample" and a["decode"]["n_best"] == 4 and a["CIDEr"] == b["CIDEr"]
    rows = read_jsonl(tmp_path / "a" / "captions.jsonl")
    assert rows == read_jsonl(tmp_path / "b" / "captions.jsonl")
    assert any(len(set(r["captions"])) > 1 for r in rows)  # draws, not one caption four times
    c = run_eval(tmp_path / "c", *args[:-1], "decode.seed=4")
    assert read_jsonl(tmp_path / "c" / "captions.jsonl") != rows and c["decode"]["seed"] == 4


@pytest.mark.parametrize(("overrides", "message"), [
    (["decode.top_p=1.5"], r"^decode\.top_p=1\.5: give a probability mass in \(0, 1\]"),
    (["decode.n_best=5"], r"^decode\.n_best=5: a beam of decode\.beam_size=3 returns at most 3 captions"),
    (["decode.method=sample", "decode.beam_size=5"], r"^decode\.beam_size=5: decode\.method=sample .* has no beam; give decode\.method=beam"),
    (["decode.temperature=0.5"], r"^decode\.temperature=0\.5: only decode\.method=sample reads it"),
    (["decode.max_len=100"], r"^decode\.max_len=100: the model was trained on captions of at most 24 words"),
])  # fmt: skip
def test_bad_decode_settings_stop_eval_before_anything_is_written(ckpt, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        run_eval(tmp_path / "out", f"ckpt_path={ckpt}", *overrides)
    assert not (tmp_path / "out").exists()




# ----- ensembles (capgen.models.ensemble) ------------------------------------------------------------
def test_capgen_eval_command_evaluates_an_ensemble_of_two_runs(ckpt, tiny_lstm_run, tmp_path):
    """ckpt_path=[attn,lstm] from a real command line: one evaluation of both checkpoints, recorded
    as the list of its members, captions of its own (not its first member's); [attn] alone is attn."""
    lstm = str(tiny_lstm_run / "checkpoints" / "last.ckpt")
    args = [f"ckpt_path=[{ckpt},{lstm}]", "data.source.sizes.test=4", "metrics=[BLEU,CIDEr]", "decode=greedy"]
    done = procs.run([str(Path(sys.executable).parent / "capgen-eval"), *args],
                     cwd=tmp_path, env={**os.environ, "HYDRA_FULL_ERROR": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"the ensemble of 2 checkpoints ({ckpt}, {lstm}) on test (4 images, greedy)" in done.stdout
    (out,) = (tmp_path / "outputs" / "eval").iterdir()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["checkpoint"] == [ckpt, lstm] and metrics["images"] == 4
    assert "grounding" in metrics  # the attention member's maps: the ensemble has attention
    ensemble = read_jsonl(out / "captions.jsonl")

    alone = run_eval(tmp_path / "alone", f"ckpt_path={ckpt}", "data.source.sizes.test=4", "decode=greedy")
    listed = run_eval(tmp_path / "listed", f"ckpt_path=[{ckpt}]", "data.source.sizes.test=4", "decode=greedy")
    assert alone["checkpoint"] == listed["checkpoint"] == ckpt  # a list of one is the checkpoint itself
    first = read_jsonl(tmp_path / "alone" / "captions.jsonl")
    assert read_jsonl(tmp_path / "listed" / "captions.jsonl") == first  # ids, captions and scores exactly
    assert [r["image_id"] for r in ensemble] == [r["image_id"] for r in first]
    assert all(r["logprob"] != f["logprob"] for r, f in zip(ensemble, first))


def test_eval_refuses_an_ensemble_of_different_vocabularies_naming_both(ckpt, tmp_path):
    module = load_module(ckpt)
    other = tmp_path / "other.ckpt"
    saved = torch.load(ckpt, weights_only=True)
    words = list(module.vocab.itos)
    words[4], words[5] = words[5], words[4]  # the same words at other ids: not the same vocabulary
    saved["vocab"] = {**saved["vocab"], "words": words}
    torch.save(saved, other)
    with pytest.raises(ValueError, match=rf"ckpt_path\[0\]={ckpt} and ckpt_path\[1\]={other} have different "
                                         rf"vocabularies \({len(words)} vs {len(words)} words, first differing at id 4"):
        run_eval(tmp_path / "out", f"ckpt_path=[{ckpt},{other}]")
    assert not (tmp_path / "out" / "metrics.json").exists()
