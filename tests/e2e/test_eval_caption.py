"""capgen-eval and capgen-caption on a tiny shapes attention run trained once per session
(the tiny_run and ckpt fixtures, tests/conftest.py)."""

import dataclasses
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider

from capgen.data.shapes import ShapesSource
from capgen.metrics.captions import score_captions
from capgen.models.decoding import DecodeSettings
from capgen.tokenizer import tokenize
from capgen.training.caption import find_images, training_image_size
from capgen.training.eval_statistics import corpus_statistics
from capgen.training.evaluate import load_module, metrics_table, with_run_data_choice
from capgen.training.run_dir import TEST_CAPTIONS

from helpers import procs
from helpers.commands import run_caption, run_eval
from helpers.fixtures_real import make_odd_images


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


def test_eval_without_a_saved_run_config_uses_eval_yaml_data(ckpt, tmp_path):
    lone = tmp_path / "lone.ckpt"  # a checkpoint away from its run dir
    lone.write_bytes(Path(ckpt).read_bytes())
    run_eval(tmp_path / "out", f"ckpt_path={lone}", "decode=greedy", "data.source.sizes.test=3")
    data = OmegaConf.load(tmp_path / "out" / "data.yaml")
    assert data.source.sizes == {"train": 10000, "val": 500, "test": 3}  # conf/data/shapes.yaml's
    assert len(json.loads((tmp_path / "out" / "results.json").read_text())) == 3


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
    with pytest.raises(ValueError, match=r"could not apply data\.cache_dir=/x to the run's saved data config"):
        run_eval(tmp_path / "out", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "data.cache_dir=/x")


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


# ----- decoding controls (capgen.training.decode) ----------------------------------------------
def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


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

    rows = _jsonl(tmp_path / "captions.jsonl")
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
    rows = _jsonl(tmp_path / "a" / "captions.jsonl")
    assert rows == _jsonl(tmp_path / "b" / "captions.jsonl")
    assert any(len(set(r["captions"])) > 1 for r in rows)  # draws, not one caption four times
    c = run_eval(tmp_path / "c", *args[:-1], "decode.seed=4")
    assert _jsonl(tmp_path / "c" / "captions.jsonl") != rows and c["decode"]["seed"] == 4


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


def test_caption_n_best_prints_and_records_every_caption_with_figures_for_the_first(ckpt, photo_dir, tmp_path, capsys):
    out = tmp_path / "out"
    rows = run_caption(out, f"ckpt_path={ckpt}", f"images={photo_dir}", "decode=diverse_beam", "decode.n_best=4",
                       "decode.min_len=2")
    lines = capsys.readouterr().out.splitlines()
    assert _jsonl(out / "captions.jsonl") == rows
    assert [line.split("\t") for line in lines] == [[r["path"], c] for r in rows for c in r["captions"]]
    for row in rows:
        assert len(row["captions"]) == 4 and row["captions"][0] == row["caption"] and row["logprobs"][0] == row["logprob"]
        assert all(len(c.split()) >= 2 for c in row["captions"])
        assert Image.open(out / row["gif"]).n_frames == len(row["words"]) + 1  # the first caption's words


# ----- capgen-caption -----------------------------------------------------------------------
@pytest.fixture
def photo_dir(tmp_path) -> Path:
    """A PNG, a grayscale JPEG and a big JPEG, as a user's folder might hold."""
    d = tmp_path / "photos"
    d.mkdir()
    shapes = ShapesSource("test", sizes={"test": 3})
    Image.fromarray(shapes.image(0)).save(d / "scene.png")
    Image.fromarray(shapes.image(1)).convert("L").save(d / "gray.jpg")
    Image.fromarray(shapes.image(2)).resize((2000, 1500)).save(d / "big.JPG")
    return d


def test_caption_a_folder_of_mixed_images_with_attention_png_and_gif(ckpt, photo_dir, tmp_path, capsys):
    out = tmp_path / "out"
    rows = run_caption(out, f"ckpt_path={ckpt}", f"images={photo_dir}", "decode=greedy")
    lines = capsys.readouterr().out.splitlines()
    assert sorted(Path(p).name for p in (line.split("\t")[0] for line in lines)) == ["big.JPG", "gray.jpg", "scene.png"]
    assert all(line.count("\t") == 1 for line in lines)  # stdout: only `path<TAB>caption`

    assert [json.loads(x) for x in (out / "captions.jsonl").read_text().splitlines()] == rows
    for row in rows:
        assert row["caption"] == " ".join(row["words"]) and len(row["word_probs"]) == len(row["words"])
        assert all(0 < p <= 1 for p in row["word_probs"])
        if not row["words"]:
            continue  # an untrained model may end at once: nothing to draw
        assert Image.open(out / row["png"]).format == "PNG"
        gif = Image.open(out / row["gif"])
        assert gif.format == "GIF" and gif.n_frames == len(row["words"]) + 1  # the plain image, then one per word
        assert gif.size[0] == 320  # the display size, not the 2000 px original or the 96 px model input
    assert any(r["words"] for r in rows)


@pytest.fixture
def odd_photos(photo_dir, tmp_path) -> Path:
    """photo_dir plus a corrupt JPEG and pictures of extreme shapes: a 3000x300 panorama and
    a 300x3000 tower of the scene (the model sees the scene squashed back to a square), a
    10000x10 strip and a 1x1 dot."""
    scene = Image.open(photo_dir / "scene.png")
    scene.resize((3000, 300)).save(photo_dir / "pano.png")
    scene.resize((300, 3000)).save(photo_dir / "tower.png")
    scene.resize((10_000, 10)).save(photo_dir / "strip.png")
    Image.new("RGB", (1, 1), (250, 0, 0)).save(photo_dir / "dot.png")
    shutil.copyfile(make_odd_images(tmp_path / "odd")["truncated"], photo_dir / "broken.jpg")
    return photo_dir


def test_a_corrupt_image_is_reported_in_its_row_and_every_shape_of_picture_is_drawn(ckpt, odd_photos, tmp_path, capsys):
    out = tmp_path / "out"
    rows = run_caption(out, f"ckpt_path={ckpt}", f"images={odd_photos}", "decode=greedy", "batch_size=3")
    captured = capsys.readouterr()
    assert [json.loads(x) for x in (out / "captions.jsonl").read_text().splitlines()] == rows
    names = ["big.JPG", "broken.jpg", "dot.png", "gray.jpg", "pano.png", "scene.png", "strip.png", "tower.png"]
    assert [Path(r["path"]).name for r in rows] == names  # every image, the failed one in its place
    broken = odd_photos / "broken.jpg"
    (bad,) = [r for r in rows if "error" in r]
    assert bad == {"path": str(broken), "error": bad["error"]} and "\n" not in bad["error"]  # no caption
    assert bad["error"].startswith(f"{broken}: corrupt or truncated") and "images=" in bad["error"]

    # stdout: a line per captioned image only; stderr: the error as it happened, then the count.
    assert [line.split("\t")[0] for line in captured.out.splitlines()] == [r["path"] for r in rows if r is not bad]
    err_lines = captured.err.splitlines()
    assert f"error: {bad['error']}" in err_lines
    assert err_lines[-1] == f"1 of 8 images failed, listed in {out / 'captions.jsonl'}"

    by_name = {Path(r["path"]).name: r for r in rows}
    assert by_name["pano.png"]["words"] and by_name["tower.png"]["words"]  # the scene's caption: figures drawn
    for row in rows:
        if row is bad or not row["words"]:
            continue
        assert Image.open(out / row["png"]).format == "PNG"
        gif = Image.open(out / row["gif"])
        assert gif.n_frames == len(row["words"]) + 1
    assert Image.open(out / by_name["pano.png"]["gif"]).size[0] == 320  # its long side, at figure_size
    assert not list(out.glob("broken*"))


def test_an_image_whose_figures_fail_is_reported_and_leaves_no_figures(ckpt, photo_dir, tmp_path, capsys, monkeypatch):
    import capgen.training.caption as caption

    def gif_fails_for_the_scene(path, *args, **kwargs):
        if Path(path).name.startswith("scene"):
            raise RuntimeError("no room\nfor this one")  # a multi-line message, as torch's often are
        return write_gif(path, *args, **kwargs)

    write_gif = caption.write_gif
    monkeypatch.setattr(caption, "write_gif", gif_fails_for_the_scene)
    out = tmp_path / "out"
    rows = run_caption(out, f"ckpt_path={ckpt}", f"images={photo_dir}", "decode=greedy")
    captured = capsys.readouterr()
    scene = photo_dir / "scene.png"
    assert rows[2] == {"path": str(scene), "error": (
        f"{scene}: its attention figures could not be drawn (RuntimeError: no room for this one); "
        "give figures=false to caption it without them")}
    assert not list(out.glob("scene*"))  # its PNG, written before the GIF failed, is gone too
    assert str(scene) not in captured.out and captured.out.count("\n") == 2
    assert captured.err.splitlines()[-1] == f"1 of 3 images failed, listed in {out / 'captions.jsonl'}"
    assert all("caption" in r for r in rows[:2])


def test_capgen_caption_command_exits_1_when_an_image_failed(ckpt, photo_dir, tmp_path):
    broken = photo_dir / "broken.jpg"
    shutil.copyfile(make_odd_images(tmp_path / "odd")["truncated"], broken)
    args = [f"ckpt_path={ckpt}", f"images={photo_dir}", "decode=greedy"]
    done = procs.run([str(Path(sys.executable).parent / "capgen-caption"), *args],
                     cwd=tmp_path)
    assert done.returncode == 1, done.stderr[-3000:]
    captioned = sorted(Path(line.split("\t")[0]).name for line in done.stdout.splitlines())
    assert captioned == ["big.JPG", "gray.jpg", "scene.png"], done.stderr[-3000:]
    (out,) = (tmp_path / "outputs" / "caption").iterdir()
    err_lines = done.stderr.splitlines()
    assert err_lines[-1] == f"1 of 4 images failed, listed in {out / 'captions.jsonl'}"
    assert any(line.startswith(f"error: {broken}: corrupt or truncated") for line in err_lines)
    rows = [json.loads(x) for x in (out / "captions.jsonl").read_text().splitlines()]
    assert [sorted(r) for r in rows if "caption" not in r] == [["error", "path"]]


@pytest.mark.parametrize("setting", ["image_size=0", "batch_size=0", "figure_size=-5", "gif_frame_ms=fast"])
def test_a_bad_caption_setting_stops_before_anything_is_written(ckpt, photo_dir, tmp_path, setting):
    key, value = setting.split("=")
    with pytest.raises(ValueError, match=rf"^{key}={value}: give a positive whole number .*, e\.g\. {key}=32$"):
        run_caption(tmp_path / "out", f"ckpt_path={ckpt}", f"images={photo_dir}", setting)
    assert not (tmp_path / "out").exists()


def test_caption_errors_say_what_was_found_and_what_is_accepted(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"no images in this folder, found nothing; accepted extensions: \.jpg"):
        find_images(str(empty))
    notes = tmp_path / "notes.txt"
    notes.write_text("a caption\n")
    with pytest.raises(ValueError, match=r"not an image file \(extension '\.txt'\); accepted: \.jpg"):
        find_images(str(notes))
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "notes.md").write_text("x")
    with pytest.raises(ValueError, match=r"no images in this folder, found 1 other entries \(notes\.md\)"):
        find_images(str(texts))
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        find_images(str(tmp_path / "nope" / "*.png"))


def test_find_images_takes_a_glob_and_ignores_other_files(photo_dir):
    (photo_dir / "readme.txt").write_text("x")
    assert [p.name for p in find_images(str(photo_dir / "*"))] == ["big.JPG", "gray.jpg", "scene.png"]
    assert [p.name for p in find_images(str(photo_dir / "*.png"))] == ["scene.png"]


def test_training_image_size_comes_from_the_run_config(tiny_run):
    assert training_image_size(OmegaConf.load(tiny_run / ".hydra" / "config.yaml")) == 96  # ShapesSource's default
    coco = OmegaConf.create({"data": {"source": {"_target_": "capgen.data.karpathy.Coco2014Source", "image_size": 224}}})
    assert training_image_size(coco) == 224
    assert training_image_size(None) is None


def test_capgen_caption_command_keeps_stdout_to_captions(ckpt, photo_dir, tmp_path):
    # A checkpoint inside a sweep job's folder and an image in a folder with `=`, `,` and a
    # space: the command must read both as paths, not as more Hydra overrides.
    job_ckpt = tmp_path / "multirun" / "1_model=attn,seed=2" / "last.ckpt"
    job_ckpt.parent.mkdir(parents=True)
    shutil.copy(ckpt, job_ckpt)
    image = tmp_path / "my photos=1,2" / "scene.png"
    image.parent.mkdir()
    shutil.copy(photo_dir / "scene.png", image)
    args = [f"ckpt_path={job_ckpt}", f"images={image}", "decode=greedy"]
    done = procs.run([str(Path(sys.executable).parent / "capgen-caption"), *args],
                     cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith(f"{image}\t") and done.stdout.count("\n") == 1
    (out,) = (tmp_path / "outputs" / "caption").iterdir()
    assert str(out) in done.stderr and (out / "captions.jsonl").is_file()


def test_attention_gif_has_one_frame_per_word_even_when_frames_would_repeat(tmp_path):
    from capgen.viz import save_attention_gif

    image = np.full((60, 120, 3), 90, dtype=np.uint8)
    words = ["a", "a", "a"]  # the same word with the same map and probability three times
    alphas = torch.full((4, 16), 1 / 16)  # one more row (<end>'s) than words, as decoding gives
    path = save_attention_gif(tmp_path / "x.gif", image, words, alphas, grid=4, probs=[0.5, 0.5, 0.5])
    gif = Image.open(path)
    assert gif.n_frames == 4 and gif.size == (120, 60 + 24)  # the picture under a band for the word
    assert gif.info["loop"] == 0
