"""capgen-eval and capgen-caption on a tiny shapes attention run trained once per session."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict
from PIL import Image

from capgen.data.shapes import ShapesSource
from capgen.training.caption import caption_images, find_images, training_image_size
from capgen.training.config import CONF_DIR
from capgen.training.evaluate import evaluate, load_module, with_run_data_choice
from capgen.training.train import train

# val and test differ in size so the tests can tell which split, and whose settings, were used.
SIZES = "data.source.sizes={train:64,val:12,test:16}"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A run dir laid out as capgen-train leaves it: .hydra/{config,hydra}.yaml and checkpoints/."""
    run = tmp_path_factory.mktemp("train") / "run"
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["debug=fast", SIZES, f"paths.output_dir={run}"], return_hydra_config=True)
    hydra_node = cfg.hydra
    with open_dict(cfg):
        del cfg.hydra
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": {"runtime": {"choices": dict(hydra_node.runtime.choices)}}}),
                   run / ".hydra" / "hydra.yaml")
    train(cfg)
    return run


@pytest.fixture(scope="session")
def ckpt(tiny_run) -> str:
    return str(tiny_run / "checkpoints" / "last.ckpt")


def run_eval(out: Path, *overrides: str) -> dict:
    """capgen-eval in-process: the same overrides Hydra would hand to evaluate(). BLEU and
    CIDEr only: METEOR's Java start-up alone would take ten seconds."""
    overrides = with_run_data_choice(["metrics=[BLEU,CIDEr]", *overrides])
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("eval", overrides=[*overrides, f"paths.output_dir={out}"])
    return evaluate(cfg, overrides)


def run_caption(out: Path, *overrides: str) -> list[dict]:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("caption", overrides=[*overrides, f"paths.output_dir={out}"])
    return caption_images(cfg)


def beam_search_available(ckpt: str) -> bool:
    module = load_module(ckpt)
    try:
        module.generate(torch.zeros(1, 3, 96, 96, dtype=torch.uint8), beam_size=2)
    except ValueError:  # "only greedy decoding exists so far"
        return False
    return True


# ----- capgen-eval --------------------------------------------------------------------------
def test_eval_writes_metrics_captions_and_coco_results_for_the_runs_test_split(ckpt, tmp_path):
    report = run_eval(tmp_path, f"ckpt_path={ckpt}", "beam_size=1")
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
    for r in rows:
        assert set(r) == {"image_id", "caption", "references", "logprob"}
        assert len(r["references"]) == 5 and r["logprob"] <= 0
    assert "val: 12" in (tmp_path / "data.yaml").read_text()  # the run's data config, saved with the scores


def test_eval_split_and_data_overrides_change_the_runs_settings(ckpt, tmp_path):
    assert run_eval(tmp_path / "val", f"ckpt_path={ckpt}", "beam_size=1", "split=val")["images"] == 12
    report = run_eval(tmp_path / "small", f"ckpt_path={ckpt}", "beam_size=1", "data.source.sizes.test=5")
    assert report["images"] == 5
    data = OmegaConf.load(tmp_path / "small" / "data.yaml")
    assert data.source.sizes == {"train": 64, "val": 12, "test": 5}  # the rest is still the run's
    assert data.batch_size == 8  # debug=fast's, as in the run (shapes.yaml says 64)


def test_eval_without_a_saved_run_config_uses_eval_yaml_data(ckpt, tmp_path):
    lone = tmp_path / "lone.ckpt"  # a checkpoint away from its run dir
    lone.write_bytes(Path(ckpt).read_bytes())
    run_eval(tmp_path / "out", f"ckpt_path={lone}", "beam_size=1", "data.source.sizes.test=3")
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
    beam = 3 if beam_search_available(ckpt) else 1  # the default once beam search exists
    args = [f"ckpt_path={ckpt}", "data.source.sizes.test=4", "metrics=[BLEU,CIDEr]"] + ([] if beam == 3 else ["beam_size=1"])
    done = subprocess.run([str(Path(sys.executable).parent / "capgen-eval"), *args],
                          cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "HYDRA_FULL_ERROR": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "CIDEr" in done.stdout and f"(4 images, beam {beam})" in done.stdout
    (out,) = (tmp_path / "outputs" / "eval").iterdir()  # Hydra's run dir, under the working directory
    assert str(out) in done.stdout
    assert len(json.loads((out / "results.json").read_text())) == 4


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
    rows = run_caption(out, f"ckpt_path={ckpt}", f"images={photo_dir}", "beam_size=1")
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
    args = [f"ckpt_path={job_ckpt}", f"images={image}", "beam_size=1"]
    done = subprocess.run([str(Path(sys.executable).parent / "capgen-caption"), *args],
                          cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith(f"{image}\t") and done.stdout.count("\n") == 1
    (out,) = (tmp_path / "outputs" / "caption").iterdir()
    assert str(out) in done.stderr and (out / "captions.jsonl").is_file()


def test_attention_gif_has_one_frame_per_word_even_when_frames_would_repeat(tmp_path):
    from capgen.viz import save_attention_gif

    image = np.full((60, 80, 3), 90, dtype=np.uint8)
    words = ["a", "a", "a"]  # the same word with the same map and probability three times
    alphas = torch.full((4, 16), 1 / 16)  # one more row (<end>'s) than words, as decoding gives
    path = save_attention_gif(tmp_path / "x.gif", image, words, alphas, grid=4, probs=[0.5, 0.5, 0.5])
    gif = Image.open(path)
    assert gif.n_frames == 4 and gif.size == (80, 60 + 24)  # the picture under a band for the word
    assert gif.info["loop"] == 0
