"""The side images are resized to for a checkpoint used without its run folder: the one it
records it was trained at (capgen.runs.provenance), else (an earlier capgen's) 256 with a
warning; capgen-caption and capgen-eval's composed data config, with untrained checkpoints."""

import logging

import pytest
from PIL import Image

import capgen.commands.caption as caption
from capgen.commands.eval.data import eval_data_config

from helpers.commands import run_caption
from helpers.fakes import write_checkpoint
from helpers.runs import compose_command

SHAPES = "capgen.data.shapes.ShapesSource"


@pytest.fixture
def sizes_read(monkeypatch):
    """The sides capgen-caption resizes its images to."""
    seen, load = [], caption.load_rgb

    def spied(path, size=None, *rest):
        seen.append(size)
        return load(path, size, *rest)

    monkeypatch.setattr(caption, "load_rgb", spied)
    return seen


@pytest.mark.parametrize("recorded, size, warned", [(64, 64, False), (None, 256, True)])
def test_a_lone_checkpoint_is_captioned_at_the_size_it_records(tmp_path, sizes_read, caplog, recorded, size, warned):
    lone = tmp_path / "alone"
    lone.mkdir()
    data = {"data": "shapes", "source": SHAPES, **({"image_size": recorded} if recorded else {})}
    ckpt = write_checkpoint(lone / "a.ckpt", "attn", training_data=data)
    Image.new("RGB", (50, 40), "red").save(tmp_path / "x.png")
    with caplog.at_level(logging.WARNING, logger="capgen.commands.caption"):
        (row,) = run_caption(tmp_path / "out", f"ckpt_path={ckpt}", f"images={tmp_path / 'x.png'}", "figures=false")
    assert "caption" in row and sizes_read == [size]
    assert ("the training image size is unknown" in caplog.text) == warned
    (second,) = run_caption(tmp_path / "out2", f"ckpt_path={ckpt}", f"images={tmp_path / 'x.png'}", "figures=false",
                            "image_size=48")  # given: it wins
    assert sizes_read[-1] == 48


def test_eval_without_the_run_config_reads_images_at_the_size_the_checkpoint_records():
    def data(*given):
        cfg = compose_command("eval", "ckpt_path=a.ckpt", *given)
        return eval_data_config(cfg, list(given), None, None, trained_image_size=64)

    assert data().source.image_size == 64  # shapes' own default would be 96
    assert data("data=coco2014").source.image_size == 64  # its config's 256 is not what the model saw
    assert data("+data.source.image_size=128").source.image_size == 128  # given: it wins
    assert data("data=coco_pt").source.get("image_size") is None  # a source of fixed-size images takes none


def test_eval_without_the_run_config_refuses_the_default_data_for_a_checkpoint_of_other_data():
    """A checkpoint of data=custom copied out of its run: scored on the default shapes it would
    say nothing; refused with its data named. Given data= (its own, or shapes on purpose), used."""
    def data(*given):
        cfg = compose_command("eval", "ckpt_path=a.ckpt", *given)
        return eval_data_config(cfg, list(given), None, None, trained_data="custom")

    with pytest.raises(ValueError, match=r"^ckpt_path=a\.ckpt: no saved run config .* trained on data=custom, so the default "
                                         r"data=shapes would score it on other data\. Give its data: .* data=custom "):
        data()
    assert data("data=shapes").source._target_.endswith("ShapesSource")  # asked for: scored on shapes
    assert data("data=custom").source._target_.endswith("CustomSource")
    cfg = compose_command("eval", "ckpt_path=a.ckpt")
    assert eval_data_config(cfg, [], None, None, trained_data="shapes").source._target_.endswith("ShapesSource")
