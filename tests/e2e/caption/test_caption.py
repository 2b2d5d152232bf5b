"""capgen-caption on a tiny shapes attention run trained once per session (the tiny_run and ckpt
fixtures, tests/conftest.py)."""

import json
import logging
import shutil
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from PIL import Image

from capgen.commands.caption import find_images
from capgen.runs.folders import training_image_size

from helpers import procs
from helpers.commands import run_caption
from helpers.fixtures_real import make_odd_images
from helpers.runs import checkpoint, read_jsonl


# ----- decoding controls (capgen.config.decode_group) ----------------------------------------------
def test_caption_n_best_prints_and_records_every_caption_with_figures_for_the_first(ckpt, photo_dir, tmp_path, capsys):
    out = tmp_path / "out"
    rows = run_caption(out, f"ckpt_path={ckpt}", f"images={photo_dir}", "decode=diverse_beam", "decode.n_best=4",
                       "decode.min_len=2")
    lines = capsys.readouterr().out.splitlines()
    assert read_jsonl(out / "captions.jsonl") == rows
    assert [line.split("\t") for line in lines] == [[r["path"], c] for r in rows for c in r["captions"]]
    for row in rows:
        assert len(row["captions"]) == 4 and row["captions"][0] == row["caption"] and row["logprobs"][0] == row["logprob"]
        assert all(len(c.split()) >= 2 for c in row["captions"])
        assert Image.open(out / row["gif"]).n_frames == len(row["words"]) + 1  # the first caption's words


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


def test_an_image_whose_figures_fail_keeps_its_caption_and_leaves_no_figures(ckpt, photo_dir, tmp_path, capsys, monkeypatch):
    import capgen.viz as viz  # where capgen-caption's figures are drawn (viz.draw_attention)

    def gif_fails_for_the_scene(path, *args, **kwargs):
        if Path(path).name.startswith("scene"):
            raise RuntimeError("no room\nfor this one")  # a multi-line message, as torch's often are
        return write_gif(path, *args, **kwargs)

    write_gif = viz.write_gif
    monkeypatch.setattr(viz, "write_gif", gif_fails_for_the_scene)
    out = tmp_path / "out"
    rows = run_caption(out, f"ckpt_path={ckpt}", f"images={photo_dir}", "decode=greedy")
    captured = capsys.readouterr()
    scene = photo_dir / "scene.png"
    message = (f"{scene}: its attention figures could not be drawn (RuntimeError: no room for this one); its caption is "
               "kept; give figures=false to caption without figures")
    assert rows[2]["figure_error"] == message and rows[2]["words"] and "error" not in rows[2] and "gif" not in rows[2]
    assert not list(out.glob("scene*"))  # its PNG, written before the GIF failed, is gone too
    assert f"{scene}\t{rows[2]['caption']}" in captured.out.splitlines() and captured.out.count("\n") == 3
    assert f"error: {message}" in captured.err.splitlines()
    assert captured.err.splitlines()[-1] == (f"1 of 3 images have their caption but no attention figures (drawing them "
                                             f"failed: figure_error in {out / 'captions.jsonl'})")
    assert all("caption" in r for r in rows)


def test_a_long_image_name_keeps_its_caption_and_a_dangling_link_gets_an_error_row(ckpt, photo_dir, tmp_path):
    """A legal 249-byte name would make its figures' names too long: they are cut, and the
    image keeps its caption. A broken link is an error row naming its missing target."""
    long = photo_dir / ("x" * 245 + ".png")
    (photo_dir / "scene.png").rename(long)
    (photo_dir / "dangling.jpg").symlink_to("nonexist.jpg")
    out = tmp_path / "out"
    rows = run_caption(out, f"ckpt_path={ckpt}", f"images={photo_dir}", "decode=greedy")
    by_name = {Path(r["path"]).name: r for r in rows}
    assert set(by_name) == {long.name, "dangling.jpg", "big.JPG", "gray.jpg"}
    assert by_name[long.name]["words"] and Image.open(out / by_name[long.name]["gif"]).format == "GIF"
    assert by_name["dangling.jpg"]["error"].startswith(
        f"{photo_dir / 'dangling.jpg'}: file not found (a symbolic link to nonexist.jpg, which does not exist)")


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


def test_caption_runs_the_encoder_in_the_precision_asked_for(ckpt, photo_dir, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="capgen.lightning.hardware"):
        rows = run_caption(tmp_path / "out", f"ckpt_path={ckpt}", f"images={photo_dir}", "decode=greedy",
                           "figures=false", "encoder_precision=32")
    assert len(rows) == 3 and "encoder precision: fp32 (encoder_precision=32, on cpu: asked for)" in caplog.text
    with pytest.raises(ValueError, match="encoder_precision='fp16': use auto"):
        run_caption(tmp_path / "bad", f"ckpt_path={ckpt}", f"images={photo_dir}", "encoder_precision=fp16")
    assert not (tmp_path / "bad").exists()


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


def test_a_checkpoint_copied_out_of_its_run_is_captioned_at_the_size_it_was_trained_at(ckpt, photo_dir, tmp_path,
                                                                                        caplog, monkeypatch):
    """capgen-train records the training image size in every checkpoint (96, shapes' default):
    a copy without its run folder still resizes to it, not to 256 with a warning."""
    import capgen.commands.caption as caption

    assert checkpoint(Path(ckpt).parent.parent)["training_data"]["image_size"] == 96
    alone = tmp_path / "alone" / "a.ckpt"
    alone.parent.mkdir()
    shutil.copy(ckpt, alone)
    sizes, load = [], caption.load_rgb
    monkeypatch.setattr(caption, "load_rgb", lambda path, size=None, *rest: sizes.append(size) or load(path, size, *rest))
    with caplog.at_level(logging.WARNING):
        rows = run_caption(tmp_path / "out", f"ckpt_path={alone}", f"images={photo_dir / 'scene.png'}", "figures=false")
    assert rows[0]["caption"] and sizes == [96]
    assert "image size is unknown" not in caplog.text


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


def test_capgen_caption_command_captions_with_an_ensemble(ckpt, tiny_lstm_run, photo_dir, tmp_path):
    """ckpt_path=[attn,lstm] from a real command line, one of them in a sweep job's folder (commas in
    its path): each image captioned by the ensemble, with the attention member's figures; its
    captions' log-probs are the ensemble's, not the attention model's alone."""
    job_ckpt = tmp_path / "multirun" / "1_model=lstm,seed=2" / "last.ckpt"
    job_ckpt.parent.mkdir(parents=True)
    shutil.copy(tiny_lstm_run / "checkpoints" / "last.ckpt", job_ckpt)
    args = [f"ckpt_path=[{ckpt},{job_ckpt}]", f"images={photo_dir}", "decode=greedy"]
    done = procs.run([str(Path(sys.executable).parent / "capgen-caption"), *args], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"the ensemble of 2 checkpoints: {ckpt}, {job_ckpt}" in done.stderr
    (out,) = (tmp_path / "outputs" / "caption").iterdir()
    rows = read_jsonl(out / "captions.jsonl")
    assert [Path(r["path"]).name for r in rows] == ["big.JPG", "gray.jpg", "scene.png"]
    assert [line.split("\t") for line in done.stdout.splitlines()] == [[r["path"], r["caption"]] for r in rows]
    for row in rows:
        if row["words"]:
            assert Image.open(out / row["gif"]).n_frames == len(row["words"]) + 1
    alone = run_caption(tmp_path / "alone", f"ckpt_path={ckpt}", f"images={photo_dir}", "decode=greedy")
    assert all(r["logprob"] != a["logprob"] for r, a in zip(rows, alone))
