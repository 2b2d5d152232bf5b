"""The table of bad inputs: each one, fed to the command a user would feed it to, gives a
one-paragraph error that names the file or setting and the fix, or a documented graceful
result, and leaves the outputs already on disk as they were.

| input                                   | command          | result                                         |
|-----------------------------------------|------------------|------------------------------------------------|
| data root missing                       | train            | error naming the root and the README section   |
| data set file missing                   | train            | error naming the file and where to get it      |
| corrupt / empty / non-image image file  | train            | error naming the file and the fix              |
| empty caption                           | train            | error naming the annotation file and image id  |
| all-unknown caption                     | vocabulary       | kept, read as <unk> words                      |
| caption longer than data.max_len        | datamodule       | kept, cut to max_len words                     |
| checkpoint of another model type        | resume           | error naming the differing settings            |
| checkpoint of another vocabulary        | eval/caption/resume | error: vocabulary and weights do not fit    |
| checkpoint of another capgen format     | eval/caption/resume | error naming both versions and the fix      |
| truncated checkpoint                    | eval/caption/resume | error: not a checkpoint torch can read      |
| resume= a folder that is not a run      | resume           | error naming the folder and what to give       |
| config override with a typo             | train/eval/caption | refused naming the key, before a run folder  |
|                                         |                  | (unit/config/, test_first_hour_commands.py)    |
| caption: folder without images, text file | caption        | error saying what was found, what is accepted  |
| caption: a corrupt image among good ones | caption         | its row and stderr name the file and the fix;  |
|                                         |                  | the others are captioned; exit status 1        |
| caption: 1x1 and 10,000x10,000 images   | caption          | captioned like any other image                 |
| caption: a 3000x300 panorama            | caption          | captioned, its figure drawn (test_viz.py)      |
| no training images, empty val/test split, | train          | stops at start-up naming the setting, before   |
|   hidden_dim=0, max_len=0, fewer train  |                  | anything is written                            |
|   images than data.batch_size           |                  | (unit/config/test_checks.py)                   |
| a setting of the wrong type (lr=abc,    | train            | one paragraph naming the key, the value and an |
|   batch_size=abc, precision=bogus, ...) |                  | example, before anything is written            |
| a setting out of range (lr=-1 or nan,   | train            | the same (unit/config/test_checks.py: all)     |
|   max_epochs=0, monitor=val/FOO, ...)   |                  |                                                |
| Hydra flags (--cfg job, --info)         | train            | work as Hydra documents them                   |
| an error raised in a DataLoader worker  | train            | one paragraph (the worker's own message), the  |
|                                         |                  | traceback in error.txt                         |
| a refused resume (another width, a      | resume           | refused; the folder byte for byte as before    |
|   model type, a damaged last.ckpt)      |                  | (test_resume_faults.py); a damaged last.ckpt:  |
|                                         |                  | the newest checkpoint that loads               |
| SIGTERM / SIGUSR1 / SIGKILL mid-run     | train            | checkpoint at the next step, summary           |
|                                         |                  | interrupted, exit 128+signal; resume is exact  |
|                                         |                  | (test_soak.py)                                 |
| 16-bit, 32-bit, float, LA, P, CMYK images | train/prepare/caption | scaled to 8-bit RGB as documented     |
|                                         |                  | (test_images.py)                               |
| a NaN learning rate or update           | train            | refused at start-up, or stopped keeping the    |
|                                         |                  | last finite weights (test_numerical_faults.py) |
| a moved or copied run folder            | resume/eval      | resumes and evaluates as itself                |
|                                         |                  | (test_resume_faults.py)                        |
| `<unk>`, `<pad>`, `<start>`, `<end>` as caption text | vocabulary | ordinary words, never special ids     |
|                                         |                  | (test_vocab.py)                                |
| duplicate image ids                     | train            | follows on_bad_sample (test_karpathy.py)       |
| two capgen-train on one run folder      | train            | the second refused, naming the holder          |
|                                         |                  | (test_run_lock.py)                             |
| a new run given another run's folder    | train            | refused naming resume= and another folder,     |
|   as hydra.run.dir                      |                  | the run kept (test_first_hour_commands.py)     |
| a half-written summary.json             | compare          | listed as unreadable, the others shown         |
|                                         |                  | (unit/commands/test_compare.py)                |
| an undecodable image, on_bad_sample=skip | train           | left out of its batch, counted, resume exact   |
|                                         |                  | (test_skip_bad_images.py)                      |
| a full disk or a read-only run folder   | train/eval       | one paragraph naming the file, no .tmp left    |
|                                         |                  | (unit/runs/test_records.py, test_checkpoint.py) |
| a file in the way of the run folder     | all              | one paragraph naming it, before Hydra writes   |
|                                         |                  | (unit/config/test_argv.py)                     |

The readers' own tests (test_karpathy.py, test_images.py, test_vocab.py) cover each case
at the source level; here they go through the entry points.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from capgen.commands.train.fit import train
from capgen.config.resume_argv import resume_argv
from capgen.data.images import BadSampleError
from capgen.vocab import Vocabulary

from helpers.commands import main_in_process, run_caption, run_eval
from helpers.fixtures_real import edit_json, make_flickr, make_odd_images
from helpers.runs import snapshot


def one_paragraph(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message.strip(), message
    return message


@pytest.fixture(scope="module")
def lstm_run(tiny_lstm_run) -> Path:
    """The session's finished tiny LSTM run (the tests here only read it)."""
    return tiny_lstm_run




def altered(run: Path, tmp_path: Path, change) -> Path:
    """A copy of the run's last.ckpt with `change(ckpt)` applied."""
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    change(ckpt)
    path = tmp_path / "altered.ckpt"
    torch.save(ckpt, path)
    return path


def earlier_output(tmp_path: Path) -> Path:
    """An output folder holding an earlier command's results, which must survive."""
    out = tmp_path / "earlier"
    out.mkdir()
    (out / "metrics.json").write_text('{"CIDEr": 1.0}\n')
    (out / "captions.jsonl").write_text('{"image_id": 1, "caption": "a red circle"}\n')
    return out


# ----- data ------------------------------------------------------------------------------------
def flickr_cfg(make_cfg, root: Path):
    return make_cfg("data=flickr8k", f"data.root={root}", "data.source.image_size=32", "data.batch_size=2",
                    "data.min_freq=1", "model=lstm", "test=false")


def test_missing_data_root_and_data_set_file(make_cfg, tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        train(flickr_cfg(make_cfg, tmp_path / "nowhere"))
    assert str(tmp_path / "nowhere") in one_paragraph(err)
    root = tmp_path / "flickr"
    make_flickr(root, "8k")
    (root / "dataset_flickr8k.json").unlink()
    with pytest.raises(FileNotFoundError) as err:
        train(flickr_cfg(make_cfg, root))
    assert "dataset_flickr8k.json" in one_paragraph(err) and "caption_datasets.zip" in str(err.value)


@pytest.mark.parametrize("kind", ["truncated", "empty", "text"])
def test_corrupt_empty_or_non_image_file_among_the_images_stops_training_naming_it(make_cfg, tmp_path, kind):
    root = tmp_path / "flickr"
    facts = make_flickr(root, "8k")
    bad = facts["paths"][facts["splits"]["train"][0]]
    shutil.copyfile(make_odd_images(tmp_path / "odd")[kind], bad)
    with pytest.raises(BadSampleError) as err:
        train(flickr_cfg(make_cfg, root))
    message = one_paragraph(err)
    assert str(bad) in message and "capgen-prepare" in message


def test_an_empty_caption_stops_training_naming_the_file_and_image(make_cfg, tmp_path):
    root = tmp_path / "flickr"
    facts = make_flickr(root, "8k")
    target = facts["splits"]["train"][0]

    def blank(data):
        image = next(i for i in data["images"] if i["imgid"] == target)
        image["sentences"][0]["raw"] = "   "

    edit_json(facts["karpathy_json"], blank)
    with pytest.raises(BadSampleError) as err:
        train(flickr_cfg(make_cfg, root))
    message = one_paragraph(err)
    assert "dataset_flickr8k.json" in message and str(target) in message and "on_bad_sample=skip" in message


def test_an_all_unknown_caption_is_read_as_unknown_words():
    vocab = Vocabulary.build(["a red circle", "a blue square"])
    ids = vocab.encode("zebras grazing quietly")
    assert ids == [vocab.start_id, vocab.unk_id, vocab.unk_id, vocab.unk_id, vocab.end_id]


def test_a_caption_longer_than_max_len_is_cut_to_it(make_cfg):
    import hydra

    cfg = make_cfg("data.max_len=4")
    datamodule = hydra.utils.instantiate(cfg.data)
    batch = next(iter(datamodule.train_dataloader()))
    assert batch.captions.shape[1] == 4 + 2  # <start>, 4 words, <end>: every shapes caption is longer
    assert (batch.lengths == 6).all()


# ----- checkpoints -----------------------------------------------------------------------------
def resume_from(make_cfg, ckpt: Path, *overrides: str):
    return train(make_cfg("model=lstm", "test=false", f"ckpt_path={ckpt}", *overrides, name="resumed"))


def other_vocabulary(ckpt: dict) -> None:
    words = [f"word{i}" for i in range(7)]
    ckpt["vocab"] = Vocabulary.build(words).to_dict()


def newer_format(ckpt: dict) -> None:
    ckpt["capgen"] = {"format": 99, "version": "9.0.0"}


CHECKPOINT_FAULTS = {
    "other-vocabulary": (other_vocabulary, "do not fit", "vocabulary has 11 words but its weights were trained for"),
    "newer-capgen-format": (newer_format, "capgen 9.0.0 in checkpoint format 99", "capgen 9.0.0 in checkpoint format 99"),
}


@pytest.mark.parametrize("fault", sorted(CHECKPOINT_FAULTS))
def test_a_checkpoint_that_does_not_fit_is_refused_by_eval_caption_and_resume(lstm_run, make_cfg, tmp_path, fault):
    change, eval_says, resume_says = CHECKPOINT_FAULTS[fault]
    ckpt = altered(lstm_run, tmp_path, change)
    out = earlier_output(tmp_path)
    before, run_before = snapshot(out), snapshot(lstm_run)
    photo = tmp_path / "photo.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(photo)
    with pytest.raises(ValueError) as err:
        run_eval(out, f"ckpt_path={ckpt}", "decode=greedy")
    assert str(ckpt) in one_paragraph(err) and eval_says in str(err.value)
    with pytest.raises(ValueError) as err:
        run_caption(out, f"ckpt_path={ckpt}", f"images={photo}", "decode=greedy")
    assert str(ckpt) in one_paragraph(err) and eval_says in str(err.value)
    with pytest.raises(ValueError) as err:
        resume_from(make_cfg, ckpt)
    assert str(ckpt) in one_paragraph(err) and resume_says in str(err.value)
    assert snapshot(out) == before and snapshot(lstm_run) == run_before


def test_a_truncated_checkpoint_is_refused_by_eval_caption_and_resume(lstm_run, make_cfg, tmp_path):
    data = (lstm_run / "checkpoints" / "last.ckpt").read_bytes()
    ckpt = tmp_path / "cut.ckpt"
    ckpt.write_bytes(data[: len(data) // 2])  # a copy that stopped half-way
    out = earlier_output(tmp_path)
    before = snapshot(out)
    for call in (lambda: run_eval(out, f"ckpt_path={ckpt}", "decode=greedy"),
                 lambda: run_caption(out, f"ckpt_path={ckpt}", f"images={out / 'metrics.json'}", "decode=greedy")):
        with pytest.raises(ValueError) as err:
            call()
        assert "not a" in one_paragraph(err)
    with pytest.raises(ValueError) as err:
        resume_from(make_cfg, ckpt)
    assert f"ckpt_path={ckpt}: not a checkpoint torch can read" in one_paragraph(err) and "truncated" in str(err.value)
    assert snapshot(out) == before


def test_resuming_another_model_type_names_the_differing_settings(lstm_run, make_cfg):
    run_before = snapshot(lstm_run)
    with pytest.raises(ValueError) as err:
        train(make_cfg("model=attn", "test=false", f"resume={lstm_run}", name="resumed"))
    message = one_paragraph(err)
    assert "model.decoder._target_: checkpoint 'capgen.models.LSTMDecoder', now 'capgen.models.AttentionDecoder'" in message
    assert "resume=<its run dir>" in message
    assert snapshot(lstm_run) == run_before


def test_resume_of_a_folder_that_is_not_a_run(lstm_run, tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        resume_argv([f"resume={tmp_path / 'missing'}"])
    assert "no such folder" in one_paragraph(err)
    with pytest.raises(FileNotFoundError) as err:
        resume_argv([f"resume={lstm_run / 'checkpoints'}"])  # one level too deep
    assert "not a capgen-train run folder" in one_paragraph(err) and "ckpt_path=<file>" in str(err.value)
    with pytest.raises(ValueError, match="resume= continues one run"):
        resume_argv(["-m", f"resume={lstm_run}"])


# ----- capgen-caption --------------------------------------------------------------------------
def test_caption_of_a_folder_without_images_or_a_text_file_keeps_earlier_outputs(lstm_run, tmp_path):
    out = earlier_output(tmp_path)
    before = snapshot(out)
    empty, notes = tmp_path / "empty", tmp_path / "notes.txt"
    empty.mkdir()
    notes.write_text("a caption\n")
    ckpt = lstm_run / "checkpoints" / "last.ckpt"
    with pytest.raises(ValueError) as err:
        run_caption(out, f"ckpt_path={ckpt}", f"images={empty}", "decode=greedy")
    assert "no images in this folder" in one_paragraph(err) and "accepted extensions" in str(err.value)
    with pytest.raises(ValueError) as err:
        run_caption(out, f"ckpt_path={ckpt}", f"images={notes}", "decode=greedy")
    assert "not an image file" in one_paragraph(err)
    assert snapshot(out) == before


def test_caption_of_a_corrupt_image_among_good_ones_names_it_in_its_row_and_captions_the_others(lstm_run, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (40, 30), (250, 0, 0)).save(photos / "good.png")
    shutil.copyfile(make_odd_images(tmp_path / "odd")["truncated"], photos / "broken.jpg")
    out = tmp_path / "out"
    broken, good = run_caption(out, f"ckpt_path={lstm_run / 'checkpoints' / 'last.ckpt'}", f"images={photos}", "decode=greedy")
    message = broken["error"]
    assert "\n" not in message.strip(), message  # one paragraph
    assert str(photos / "broken.jpg") in message and "corrupt or truncated" in message and "images=" in message
    assert set(broken) == {"path", "error"} and isinstance(good["caption"], str) and "error" not in good
    captured = capsys.readouterr()
    assert f"error: {message}" in captured.err.splitlines() and "broken.jpg" not in captured.out
    assert captured.err.splitlines()[-1] == f"1 of 2 images failed, listed in {out / 'captions.jsonl'}"
    assert [json.loads(line) for line in (out / "captions.jsonl").read_text().splitlines()] == [broken, good]


def test_tiny_and_huge_images_are_captioned(lstm_run, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (1, 1), (250, 0, 0)).save(photos / "dot.png")
    # 10,000 x 10,000 (100 Mpixel, past PIL's 89 Mpixel warning but under its 179 Mpixel refusal).
    Image.fromarray(np.full((10_000, 10_000, 3), 90, dtype=np.uint8)).save(photos / "huge.png", compress_level=1)
    rows = run_caption(tmp_path / "out", f"ckpt_path={lstm_run / 'checkpoints' / 'last.ckpt'}", f"images={photos}", "decode=greedy")
    assert [Path(r["path"]).name for r in rows] == ["dot.png", "huge.png"]
    assert all(isinstance(r["caption"], str) and r["logprob"] <= 0 for r in rows)


def test_an_empty_split_the_run_does_not_use_is_fine(make_cfg):
    metrics = train(make_cfg("data.source.sizes={train:64,val:16,test:0}", "test=false"))
    assert "val/CIDEr" in metrics


def test_a_bad_setting_is_one_paragraph_on_the_console_and_in_summary_json(tmp_path, monkeypatch, capsys):
    """capgen-train's main() as a user's command line reaches it: it exits with the paragraph
    (status 1, no traceback: error.txt keeps it), and nothing but the run's records is written.
    The folder is named by paths.output_dir, so its .hydra/ lands there too (capgen.config.argv)."""
    run = tmp_path / "run"
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    said = main_in_process("train", "debug=fast", "model.module.optimizer.lr=abc", f"paths.output_dir={run}",
                           cwd=tmp_path, monkeypatch=monkeypatch)
    assert isinstance(said, str), said  # SystemExit with a message: printed to stderr, exit status 1
    assert said.startswith("capgen-train: ValueError: model.module.optimizer.lr='abc': must be a number"), said
    assert "\n" not in said and "Traceback" not in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == [".hydra", ".lock", "error.txt", "summary.json", "train.log"]
    assert "Traceback" in (run / "error.txt").read_text()
    assert json.loads((run / "summary.json").read_text())["status"] == "failed"


def test_hydra_flags_with_values_work(tmp_path, monkeypatch, capsys):
    assert main_in_process("train", "--cfg", "job", "model=lstm", cwd=tmp_path, monkeypatch=monkeypatch) in (None, 0)
    assert "_target_: capgen.models.LSTMDecoder" in capsys.readouterr().out


@pytest.mark.parametrize("command, args, says", [
    ("eval", ["decode.beam_size=0"], "capgen-eval: ValueError: decode.beam_size=0"),
    ("caption", ["images=no_such_folder"], "capgen-caption: "),
])
def test_eval_and_caption_failures_end_with_one_paragraph_and_keep_the_traceback(lstm_run, tmp_path, monkeypatch, capsys,
                                                                                command, args, says):
    out = tmp_path / "out"
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    said = main_in_process(command, f"ckpt_path={lstm_run / 'checkpoints' / 'last.ckpt'}", *args,
                           f"paths.output_dir={out}", cwd=tmp_path, monkeypatch=monkeypatch)
    assert isinstance(said, str) and (out / ".hydra" / "config.yaml").is_file(), said  # exit status 1
    assert said.startswith(says) and said.endswith(f"(traceback in {out / 'error.txt'})"), said
    assert "Traceback" not in capsys.readouterr().err and "Traceback" in (out / "error.txt").read_text()
