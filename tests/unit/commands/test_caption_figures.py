"""capgen-caption's rows and the demo's captions when attention figures cannot be drawn, with an untrained
attention checkpoint (written without a Trainer)."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import capgen.viz as viz  # where capgen-caption's figures are drawn (viz.draw_attention)
from capgen.commands import caption

from helpers.fakes import write_checkpoint
from helpers.runs import compose_command


def test_an_image_whose_figures_fail_keeps_its_caption_and_the_error_is_named(tmp_path, monkeypatch, capsys):
    ckpt = write_checkpoint(tmp_path / "a.ckpt", "attn")
    photos = tmp_path / "photos"
    photos.mkdir()
    for name, colour in (("blue.png", "blue"), ("red.png", "red")):
        Image.new("RGB", (40, 30), colour).save(photos / name)
    write_gif = viz.write_gif

    def fails_for_red(path, *args, **kwargs):
        if Path(path).name.startswith("red"):
            raise OSError(28, "No space left on device")
        return write_gif(path, *args, **kwargs)

    monkeypatch.setattr(viz, "write_gif", fails_for_red)
    out = tmp_path / "out"
    cfg = compose_command("caption", f"ckpt_path={ckpt}", f"images={photos}", "decode=greedy", "decode.min_len=2",
                          f"paths.output_dir={out}")
    with pytest.raises(SystemExit) as ended:
        caption.run(cfg)
    assert ended.value.code == 1  # a figure asked for is missing: scripts learn of it
    blue, red = (json.loads(line) for line in (out / "captions.jsonl").read_text().splitlines())
    message = (f"{photos / 'red.png'}: its attention figures could not be drawn (OSError: [Errno 28] No space left on "
               f"device); its caption is kept; give figures=false to caption without figures")
    assert red["figure_error"] == message and "error" not in red
    assert len(red["words"]) >= 2 and red["caption"] == " ".join(red["words"]) and "png" not in red and "gif" not in red
    assert not list(out.glob("red*"))  # its PNG, written before the GIF failed, is gone too
    assert (out / blue["gif"]).is_file() and "figure_error" not in blue
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [f"{photos / 'blue.png'}\t{blue['caption']}", f"{photos / 'red.png'}\t{red['caption']}"]
    err = captured.err.splitlines()
    assert f"error: {message}" in err
    assert err[-1] == (f"1 of 2 images have their caption but no attention figures (drawing them failed: figure_error "
                       f"in {out / 'captions.jsonl'})")


def test_the_demo_keeps_the_caption_of_a_picture_whose_figures_fail_and_shows_why(tmp_path, monkeypatch, caplog):
    from capgen.commands.demo.page import caption_html
    from capgen.commands.demo.served import caption_picture, load_served_models, page_settings

    ckpt = write_checkpoint(tmp_path / "a.ckpt", "attn")
    (served,) = load_served_models(compose_command("demo", f"ckpt_path={ckpt}", f"paths.output_dir={tmp_path / 'out'}"))

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(viz, "write_gif", no_space)
    picture = np.zeros((30, 40, 3), dtype=np.uint8)
    settings = dataclasses.replace(page_settings(served.settings, "greedy", 1, 1, 1.0, 1.0, 0), min_len=2)
    done = caption_picture(served, picture, settings, tmp_path / "figs")
    assert len(done.row["words"]) >= 2 and done.frames == [] and done.gif is None and done.png is None
    assert done.row["figure_error"] == (f"the attention figures could not be drawn into {tmp_path / 'figs'} "
                                        f"(OSError: [Errno 28] No space left on device); the caption is kept")
    assert "No space left on device" in caplog.text
    page = caption_html(done.row)
    assert "the caption is kept" in page and done.row["caption"] in page
    # A figure folder that cannot be made (a file in its place): the same, the caption kept.
    in_the_way = tmp_path / "a file"
    in_the_way.write_text("mine")
    kept = caption_picture(served, picture, settings, in_the_way / "figs")
    assert kept.row["words"] and kept.row["figure_error"].startswith(f"the attention figures could not be drawn into "
                                                                     f"{in_the_way / 'figs'} (")
