"""capgen-caption's rows when an image's attention figures cannot be drawn, with an untrained
attention checkpoint (written without a Trainer)."""

import json
from pathlib import Path

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
