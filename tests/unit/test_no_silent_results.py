"""No silent results: a setting, input or artifact that would change results without a word is
refused at start-up (or named in the output). One test per class, each trying several members;
none of them trains, starts a process or runs an epoch."""

import pytest

from capgen.demo.app import check_settings as check_demo
from capgen.training.caption import check_settings as check_caption
from capgen.training.config import register
from capgen.training.evaluate import check_settings as check_eval
from capgen.training.prepare import prepare
from capgen.training.train import check_settings as check_train

from helpers.runs import compose_command

register()




# ----- 1. numbers that are not numbers ------------------------------------------------------
TRAIN = ("debug=fast",)
NOT_NUMBERS = [
    # (command, its check, the override, the key the error must name)
    ("train", check_train, "model.module.optimizer.lr=nan", "model.module.optimizer.lr=nan"),
    ("train", check_train, "model.module.val.decode.length_penalty=nan", "model.module.val.decode.length_penalty=nan"),
    ("train", check_train, "model.module.objective.label_smoothing=inf", "model.module.objective.label_smoothing=inf"),
    ("train", check_train, "model.decoder.dropout=-inf", "model.decoder.dropout=-inf"),
    ("train", check_train, "callbacks.early_stopping.min_delta=nan", "callbacks.early_stopping.min_delta=nan"),
    ("train", check_train, "trainer.gradient_clip_val=inf", "trainer.gradient_clip_val=inf"),
    ("train", check_train, "data.batch_size=nan", "data.batch_size=nan"),  # a float where a whole number goes
    ("train", check_train, "experiment=shapes_scst model.module.objective.scst.lr=inf", "model.module.objective.scst.lr=inf"),
    ("eval", check_eval, "decode.length_penalty=nan", "decode.length_penalty=nan"),
    ("eval", check_eval, "decode.diversity_strength=nan", "decode.diversity_strength=nan"),
    ("eval", check_eval, "decode.temperature=inf", "decode.temperature=inf"),
    ("caption", check_caption, "decode.top_p=nan", "decode.top_p=nan"),
    ("caption", check_caption, "decode.temperature=-inf", "decode.temperature=-inf"),
    ("demo", check_demo, "decode.length_penalty=inf", "decode.length_penalty=inf"),
    ("prepare", None, "model.module.optimizer.lr=nan", "model.module.optimizer.lr=nan"),
]


@pytest.mark.parametrize("command, check, override, key", NOT_NUMBERS)
def test_nan_and_infinities_are_refused_at_start_up_naming_the_setting(tmp_path, command, check, override, key):
    given = {"train": [*TRAIN, f"paths.output_dir={tmp_path / 'run'}"], "eval": [], "demo": [],
             "caption": ["ckpt_path=x.ckpt", "images=x.jpg"], "prepare": [f"cache_dir={tmp_path / 'cache'}"]}[command]
    cfg = compose_command(command, *given, *override.split())
    with pytest.raises(ValueError) as err:
        if command == "prepare":
            prepare(cfg)
        else:
            check(cfg)
    message = str(err.value)
    assert message.startswith(f"{key}: must be a finite number"), message
    assert "\n" not in message
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()  # nothing written


def test_the_default_is_offered_where_a_constructor_gives_one(tmp_path):
    cfg = compose_command("train", *TRAIN, f"paths.output_dir={tmp_path}", "model.module.optimizer.lr=nan")
    with pytest.raises(ValueError, match=r"e\.g\. model\.module\.optimizer\.lr=0\.002 \(the default\)"):
        check_train(cfg)


def test_decode_settings_built_in_code_refuse_nan_too():
    from capgen.models.search.settings import DecodeSettings

    with pytest.raises(ValueError, match=r"decode\.length_penalty=nan: give a finite number"):
        DecodeSettings(method="beam", beam_size=3, length_penalty=float("nan"))


# ----- 2. settings that contradict each other or the run ------------------------------------
CONTRADICTIONS = [
    # the recipe with fewer epochs than its cross-entropy phase: it would finish as a cross-entropy run
    (("experiment=shapes_scst", "trainer.max_epochs=5"),
     r"^model\.module\.objective\.scst\.from_epoch=8 with trainer\.max_epochs=5: self-critical training .* complete as a cross-entropy"),
    (("model.module.objective.name=scst", "model.module.objective.scst.from_epoch=1"),  # debug=fast: 1 epoch
     r"^model\.module\.objective\.scst\.from_epoch=1 with trainer\.max_epochs=1"),
    (("model.module.objective.scheduled_sampling.probability=0.25", "model.module.objective.scheduled_sampling.start=3", "trainer.max_epochs=3"),
     r"^model\.module\.objective\.scheduled_sampling\.start=3 with trainer\.max_epochs=3: scheduled sampling"),
    (("model.module.scheduler.name=step", "trainer.max_epochs=4"),  # scheduler.step_epochs=10: never cut
     r"^model\.module\.scheduler\.step_epochs=10 with trainer\.max_epochs=4"),
    (("model.module.scheduler.name=plateau", "trainer.max_epochs=4", "+trainer.check_val_every_n_epoch=2"),
     r"^model\.module\.scheduler\.name=plateau steps after every epoch on val/CIDEr, and trainer\.check_val_every_n_epoch=2"),
    (("model.module.scheduler.name=plateau", "+trainer.check_val_every_n_epoch=null", "+trainer.val_check_interval=2"),
     r"^model\.module\.scheduler\.name=plateau .*check_val_every_n_epoch=null"),
    (("model.module.objective.name=scst", "model.module.objective.scst.max_len=2"),
     r"^model\.module\.objective\.scst\.max_len=2: .* no 4-gram"),
    (("callbacks.early_stopping.patience=3", "callbacks.early_stopping.monitor=val/BLEU-5"),
     r"^callbacks\.early_stopping\.monitor='val/BLEU-5': no epoch of this run logs it"),
    (("callbacks.model_checkpoint.monitor=val/METEOR",),  # val_metrics: BLEU and CIDEr
     r"^callbacks\.model_checkpoint\.monitor='val/METEOR': no epoch of this run logs it"),
    (("trainer.limit_val_batches=0",),
     r"^monitor=val/CIDEr: trainer\.limit_val_batches=0: no epoch validates, .*monitor=train/loss monitor_mode=min"),
    (("trainer.max_epochs=3", "+trainer.check_val_every_n_epoch=4"),
     r"^monitor=val/CIDEr: trainer\.check_val_every_n_epoch=4 with trainer\.max_epochs=3: no epoch validates"),
    (("monitor=val/loss",),  # monitor_mode stays max: the best checkpoint would be the highest loss
     r"^monitor=val/loss with monitor_mode=max: a loss is better lower.*Give monitor_mode=min"),
    (("monitor=val/BLEU-4", "monitor_mode=min"), r"^monitor=val/BLEU-4 with monitor_mode=min: a score is better higher"),
    (("callbacks.early_stopping.patience=2", "callbacks.early_stopping.mode=min"),
     r"^callbacks\.early_stopping\.monitor=val/CIDEr with callbacks\.early_stopping\.mode=min"),
]


@pytest.mark.parametrize("overrides, message", CONTRADICTIONS)
def test_settings_that_contradict_each_other_or_the_run_stop_it_at_start_up(tmp_path, overrides, message):
    cfg = compose_command("train", *TRAIN, f"paths.output_dir={tmp_path / 'run'}", *overrides)
    with pytest.raises(ValueError, match=message) as err:
        check_train(cfg)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("overrides", [
    ("experiment=shapes_scst", "trainer.max_epochs=10"),  # 8 epochs of cross-entropy, then 2 of SCST
    ("experiment=shapes_scst", "+trainer.fast_dev_run=1"),  # a smoke test: its result claims nothing
    ("model.module.objective.name=scst", "model.module.objective.scst.max_len=3"),
    ("trainer.limit_val_batches=0", "monitor=train/loss", "monitor_mode=min"),
    ("model.module.scheduler.name=plateau", "trainer.max_epochs=3"),
    ("model.module.scheduler.name=step", "model.module.scheduler.step_epochs=2", "trainer.max_epochs=3"),
    ("callbacks.early_stopping.monitor=val/BLEU-5",),  # early stopping off (patience null): never read
    ("monitor=val/loss", "monitor_mode=min"),
])
def test_settings_that_agree_pass(tmp_path, overrides):
    check_train(compose_command("train", *TRAIN, f"paths.output_dir={tmp_path / 'run'}", *overrides))


def test_the_scst_reward_scores_captions_and_references_narrower_than_its_4_grams():
    import torch

    from capgen.metrics.cider_reward import CiderDReward

    reward = CiderDReward({1: [[3, 4, 2]], 2: [[5, 2]]}, vocab_size=10)  # no reference holds a 4-gram
    # one word and its <end>: 2 tokens wide, once a tensor-size error
    scores = reward(torch.tensor([1, 2]), torch.tensor([[3, 4], [5, 2]]))
    assert scores[1] > 0 and scores[0] > 0
    assert reward(torch.tensor([1]), torch.tensor([[3, 4, 2]]))[0].item() == pytest.approx(7.5)  # 1-3-grams match: 3/4 x 10


# ----- 3. inputs that become something else -------------------------------------------------
def _custom(tmp_path, rows: str, name: str = "captions.jsonl", data: bytes | None = None):
    """A custom data set: images a.png, b.png and the captions file `name` holding `rows` (or the bytes `data`)."""
    from PIL import Image

    (tmp_path / "images").mkdir(exist_ok=True)
    for file in ("a.png", "b.png"):
        Image.new("RGB", (8, 8), "red").save(tmp_path / "images" / file)
    (tmp_path / name).write_bytes(data if data is not None else rows.encode())
    return name


def _row(file, caption, split="train", **more):
    import json

    return json.dumps({"file": file, "caption": caption, "split": split, **more}) + "\n"


# What the COCO tokenizer drops entirely (it keeps "?!", "★" or ":)" as tokens, as the official one does).
@pytest.mark.parametrize("caption", ["🐶🛋️", "...", " - ; : ", "🌧️ 🌧️ 🌧️", "🇫🇷", "!", "\u200b"])
def test_captions_that_tokenize_to_nothing_are_empty_captions_under_on_bad_sample(tmp_path, caption):
    from capgen.data.custom import CustomSource
    from capgen.data.images import BadSampleError

    name = _custom(tmp_path, _row("a.png", "A red square.") + _row("a.png", caption) + _row("b.png", caption))
    with pytest.raises(BadSampleError, match=r"captions\.jsonl \(line 1.*caption 1 .*has no words once tokenized"):
        CustomSource(tmp_path, "train", captions=name, image_dir="images")
    kept = CustomSource(tmp_path, "train", captions=name, image_dir="images", on_bad_sample="skip")
    # a.png keeps its caption with words; b.png has none left, like an image whose captions are all ""
    assert len(kept) == 1 and kept.captions(0) == ["A red square."]


def test_captions_with_words_in_any_script_are_kept(tmp_path):
    from capgen.data.custom import CustomSource

    kept = ("A dog 🐶.", "Ein Hund.", "犬", "un chien (brun)", "?!", "★")  # the tokenizer keeps a token of each
    rows = "".join(_row("a.png", c) for c in kept)
    src = CustomSource(tmp_path, "train", captions=_custom(tmp_path, rows), image_dir="images")
    assert src.captions(0) == list(kept)


UTF8_CSV = "file,caption,split\na.png,A red square.,train\nb.png,A red circle.,train\n"
BAD_FILES = [
    # (file name, bytes, what the message must say)
    ("captions.csv", UTF8_CSV.encode("utf-16"), r"captions\.csv: the captions file starts with a UTF-16 .*save the captions file as UTF-8"),
    ("captions.csv", UTF8_CSV.encode("utf-16-le"), r"captions\.csv: the captions file holds NUL bytes \(line 1\).*UTF-8"),
    ("captions.csv", UTF8_CSV.replace("b.png", "\ufeffb.png").encode(), r"captions\.csv: line 3 holds a byte-order mark"),
    ("captions.csv", "file,caption,split\na.png,Un carré rouge.,train\n".encode("latin-1"), r"captions\.csv: line 2 is not UTF-8"),
    ("captions.csv", b"file,caption,split\n", r"captions\.csv has no caption rows under its header.*a\.jpg,A dog"),
    ("captions.jsonl", b"\n\n", r"captions\.jsonl has no caption rows"),
    ("captions.jsonl", _row("a.png", "A red square.", image_id=2**64).encode(),
     r"captions\.jsonl: line 1 has image_id 18446744073709551616, which does not fit in 64 bits"),
    ("captions.csv", b"file,caption,split,image_id\na.png,A square.,train,-99999999999999999999\n",
     r"captions\.csv: line 2 has image_id -99999999999999999999, which does not fit in 64 bits"),
    ("split.json", b'{"dataset": "mine", "images": [{"filename": "a.png", "split": "train", "imgid": 1e20, '
                   b'"sentences": [{"raw": "A square."}]}]}', r"split\.json: image 0 has image_id 100000000000000000000"),
    ("split.json", '{"dataset": "mine", "images": []}'.encode("utf-16"), r"split\.json: the captions file starts with a UTF-16|split\.json: .*UTF-16"),
]


@pytest.mark.parametrize("name, data, message", BAD_FILES)
def test_captions_files_that_would_read_as_something_else_name_the_file_the_line_and_the_fix(tmp_path, name, data, message):
    from capgen.data.custom import CustomSource

    _custom(tmp_path, "", name=name, data=data)
    with pytest.raises(ValueError, match=message) as err:
        CustomSource(tmp_path, "train", captions=name, image_dir="images")
    assert "\n" not in str(err.value)


def test_a_utf8_byte_order_mark_at_the_start_is_read_as_a_spreadsheet_writes_it(tmp_path):
    from capgen.data.custom import CustomSource

    for name, text in (("captions.csv", UTF8_CSV), ("captions.jsonl", _row("a.png", "A red square."))):
        _custom(tmp_path, "", name=name, data=b"\xef\xbb\xbf" + text.encode())
        assert CustomSource(tmp_path, "train", captions=name, image_dir="images").captions(0) == ["A red square."]


# ----- 4. artifacts that no longer match what they claim to be ------------------------------
class _Pictures:
    """A source of n 16x16 pictures, each filled with its own grey value."""

    def __init__(self, n: int = 20):
        self.n = n

    def __len__(self):
        return self.n

    def image(self, i):
        import numpy as np

        return np.full((16, 16, 3), 10 + i, np.uint8)

    def image_id(self, i):
        return 100 + i

    def captions(self, i):
        return [f"picture {i}"]


def _zero(path, start=0, length=None):
    data = bytearray(path.read_bytes())
    stop = len(data) if length is None else start + length
    data[start:stop] = bytes(stop - start)
    path.write_bytes(bytes(data))


def _edit_json(path, change):
    import json

    value = json.loads(path.read_text())
    change(value)
    path.write_text(json.dumps(value))


DAMAGES = [
    # (what is done to the cache, the file the error must name)
    ("images zeroed", lambda d: _zero(d / "images_train.u8"), "images_train.u8"),
    ("the first half zeroed", lambda d: _zero(d / "images_train.u8", 0, 10 * 16 * 16 * 3), "images_train.u8"),
    ("a caption edited", lambda d: _edit_json(d / "images_train.json", lambda v: v["captions"][3].__setitem__(0, "a dog")),
     "images_train.json"),
    ("an id edited", lambda d: _edit_json(d / "images_train.json", lambda v: v["image_ids"].__setitem__(0, 7)),
     "images_train.json"),
    ("a word of vocab.json edited", lambda d: _edit_json(d / "vocab.json", lambda v: v["words"].__setitem__(5, "cat")),
     "vocab.json"),
    ("vocab.json's max_len edited", lambda d: _edit_json(d / "vocab.json", lambda v: v.__setitem__("max_len", 3)),
     "vocab.json"),
]


@pytest.mark.parametrize("what, damage, named", DAMAGES, ids=[d[0] for d in DAMAGES])
def test_a_cache_changed_after_capgen_prepare_wrote_it_is_refused_naming_the_file_and_the_rebuild(tmp_path, what, damage, named):
    import numpy as np

    from capgen.data import cache
    from capgen.vocab import Vocabulary

    source, description = _Pictures(), {"source": "pictures", "split": "train"}
    vocab = Vocabulary.build([c for i in range(len(source)) for c in source.captions(i)])
    recipe = {"source": description, "min_freq": 1, "max_len": 20}
    cache.save_vocab(tmp_path, vocab, recipe)
    cache.write_image_cache(source, tmp_path, "train", description)
    assert np.array_equal(cache.CachedImages(tmp_path, "train", description).image(3), source.image(3))
    assert cache.load_vocab(tmp_path, recipe) == vocab
    damage(tmp_path)
    with pytest.raises(cache.CacheDamaged) as err:
        cache.load_vocab(tmp_path, recipe)
        cache.CachedImages(tmp_path, "train", description)
    message = str(err.value)
    assert message.startswith(str(tmp_path / named)) and f"capgen-prepare data=<this data config> cache_dir={tmp_path}" in message
    # capgen-prepare, the fix the message gives, rebuilds what no longer matches
    cache.save_vocab(tmp_path, vocab, recipe)
    cache.write_image_cache(source, tmp_path, "train", description)
    assert cache.load_vocab(tmp_path, recipe) == vocab
    assert np.array_equal(cache.CachedImages(tmp_path, "train", description).image(3), source.image(3))


WORD_VECTOR_FILES = [
    # (bytes of the file, what the message must say)
    (b"", r"glove\.txt: the file holds no vectors \(it is empty\)"),
    (b"3 5\n\n", r"glove\.txt: the file holds no vectors \(only blank lines or a header\)"),
    (b"3000000 5\n" + bytes(range(256)) * 40, r"glove\.txt: the file is binary \(word2vec's \.bin format\?\)"),
    (b"red 0.1 0.2 nan 0.4 0.5\n", r"glove\.txt: line 1 \('red'\) holds a value that is not a finite number"),
    (b"dog 0.1 0.2 0.3 0.4 0.5\nred 0.1 inf 0.3 0.4 0.5\n", r"glove\.txt: line 2 \('red'\) holds a value that is not a finite"),
    (b"hund 0.1 0.2 0.3 0.4 0.5\nrot 0.1 0.2 0.3 0.4 0.5\n", r"glove\.txt: none of the vocabulary's 3 words is in the file"),
]


@pytest.mark.parametrize("data, message", WORD_VECTOR_FILES)
def test_a_word_vectors_file_that_would_leave_the_embedding_random_or_nan_is_named_with_what_is_wrong(tmp_path, data, message):
    from capgen.models.word_vectors import read_word_vectors
    from capgen.vocab import Vocabulary

    (tmp_path / "glove.txt").write_bytes(data)
    with pytest.raises(ValueError, match=r"^model\.module\.word_vectors=.*" + message):
        read_word_vectors(tmp_path / "glove.txt", Vocabulary.build(["a red dog"]), 5)


def test_init_from_a_checkpoint_whose_vocabulary_misses_the_datas_words_is_refused_unless_accepted():
    from types import SimpleNamespace

    from capgen.training.init_from import check_coverage
    from capgen.vocab import Vocabulary

    data = [f"w{k} w{k + 1} w{k + 2}" for k in range(40)]  # 42 words
    other = SimpleNamespace(path="other/best.ckpt", vocab=Vocabulary.build(["w0 w1 w2 w3 w4 w5 cat sat"]))
    with pytest.raises(ValueError, match=r"^init_from=other/best\.ckpt: its vocabulary covers 6 of the 42 words .*"
                                         r"init_from_min_coverage=0\.14 \(0: any\)\.$"):
        check_coverage(other, data, min_freq=1, max_len=20, min_coverage=0.5)
    assert check_coverage(other, data, min_freq=1, max_len=20, min_coverage=0) == pytest.approx(6 / 42)
    same = SimpleNamespace(path="same.ckpt", vocab=Vocabulary.build(data))
    assert check_coverage(same, data, min_freq=1, max_len=20, min_coverage=0.5) == 1.0
    with pytest.raises(ValueError, match=r"^init_from_min_coverage=1\.5: a share from 0 to 1"):
        check_coverage(same, data, min_freq=1, max_len=20, min_coverage=1.5)


class _OneBad(_Pictures):
    """Picture 4 unreadable until `fixed`."""

    fixed = False

    def image(self, i):
        if i == 4 and not self.fixed:
            raise ValueError("pictures/4.png: image file is truncated")
        return super().image(i)


def test_bad_images_are_read_again_by_capgen_prepare_after_the_user_fixes_them(tmp_path):
    import json

    import numpy as np

    from capgen.data import cache

    source, description = _OneBad(), {"source": "pictures", "split": "train"}
    index = cache.write_image_cache(source, tmp_path, "train", description, on_bad_sample="skip")
    cache.record_bad_images(tmp_path, "train", index)
    assert [b["image_id"] for b in json.loads((tmp_path / "bad_images.json").read_text())["train"]] == [104]
    assert len(cache.CachedImages(tmp_path, "train", description)) == 19
    cache.write_image_cache(source, tmp_path, "train", description, on_bad_sample="skip")  # still bad: kept out
    assert len(cache.CachedImages(tmp_path, "train", description)) == 19

    source.fixed = True  # the user puts a good file in its place and runs capgen-prepare again
    index = cache.write_image_cache(source, tmp_path, "train", description, on_bad_sample="skip")
    cache.record_bad_images(tmp_path, "train", index)
    assert not (tmp_path / "bad_images.json").exists() or "train" not in json.loads((tmp_path / "bad_images.json").read_text())
    fixed = cache.CachedImages(tmp_path, "train", description)  # its checksums match the rewritten file
    assert len(fixed) == 20 and np.array_equal(fixed.image(4), source.image(4))


# ----- 5. failures of the machine -----------------------------------------------------------
@pytest.fixture
def read_only(monkeypatch, tmp_path):
    """tmp_path/ro as if on a read-only mount (a test cannot mount one; root may write anywhere else)."""
    import os

    folder = tmp_path / "ro"
    folder.mkdir()
    access, statvfs = os.access, os.statvfs

    def on_it(path):
        return str(os.fspath(path)).startswith(str(folder))

    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if on_it(p) and mode & os.W_OK else access(p, mode, **kw))

    class ReadOnly:
        def __init__(self, real):
            self.real = real

        def __getattr__(self, name):
            return os.ST_RDONLY | self.real.f_flag if name == "f_flag" else getattr(self.real, name)

    monkeypatch.setattr(os, "statvfs", lambda p: ReadOnly(statvfs(p)) if on_it(p) else statvfs(p))
    return folder


@pytest.mark.parametrize("command, args, says", [
    ("train", [], r"^capgen-train: cannot make the run folder .*/ro/outputs/train: .*/ro is on a read-only file system"),
    ("train", ["resume={ro}/run"], r"^capgen-train: resume=.*/ro/run: .*read-only file system.* Nothing was changed\. "
                                   r"Copy the run to a writable place"),
    ("train", ["hydra.run.dir={ro}/a/b"], r"^capgen-train: cannot make the run folder .*/ro/a/b"),
    ("eval", ["ckpt_path=x.ckpt"], r"^capgen-eval: cannot make the run folder .*/ro/outputs/eval"),
    ("caption", ["ckpt_path=x.ckpt", "images=y"], r"^capgen-caption: cannot make the run folder"),
    ("prepare", ["cache_dir=/tmp/c"], r"^capgen-prepare: cannot make the run folder"),
    ("train", ["-m", "hydra.sweep.dir={ro}/sweep", "seed=1,2"], r"^capgen-train: cannot make the run folder .*/ro/sweep"),
])
def test_a_run_folder_on_a_read_only_mount_is_one_paragraph_before_hydra_writes(read_only, monkeypatch, command, args, says):
    from capgen.cli.argv import require_writable_run_folder

    monkeypatch.chdir(read_only)
    (read_only / "run").mkdir()
    with pytest.raises(SystemExit) as err:
        require_writable_run_folder([a.format(ro=read_only) for a in args], command)
    import re

    assert re.search(says, str(err.value)) and "\n" not in str(err.value), err.value
    require_writable_run_folder([f"hydra.run.dir={read_only.parent / 'rw'}"], command)  # a writable folder passes


def test_capgen_compare_markdown_into_a_missing_or_read_only_folder_is_one_line_before_any_work(read_only, tmp_path, capsys):
    from capgen.cli.compare import main

    for target, says in ((tmp_path / "missing" / "runs.md", "its folder .*missing does not exist; create it"),
                         (read_only / "runs.md", "ro is on a read-only file system"), (tmp_path, "a folder; give a file")):
        with pytest.raises(SystemExit) as err:
            main([str(tmp_path), "--markdown", str(target)])
        assert err.value.code == 2
        import re

        assert re.search(r"capgen-compare: error: --markdown .*" + says, capsys.readouterr().err)


def test_capgen_prepare_on_a_full_disk_reserves_the_space_first_and_says_how_much_is_needed(tmp_path, monkeypatch):
    import errno
    import os

    from capgen.data import cache

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)  # a test cannot fill a disk; the call is what a full one answers
    with pytest.raises(ValueError, match=r"the cache file images_train\.u8\.partial needs 0\.00 GB and the disk has .* GB "
                                         r"free \(No space left on device\); free .* or give a cache_dir= on a larger disk"):
        cache.write_image_cache(_Pictures(), tmp_path, "train", {"source": "pictures"})
    assert not (tmp_path / "images_train.u8.partial").exists() and not (tmp_path / "images_train.u8").exists()
    monkeypatch.undo()
    cache.write_image_cache(_Pictures(), tmp_path, "train", {"source": "pictures"})  # with room, it is written


def test_the_cache_file_is_allocated_on_disk_before_rows_are_written(tmp_path, monkeypatch):
    import os

    from capgen.data import cache

    reserved = []
    real = os.posix_fallocate
    monkeypatch.setattr(os, "posix_fallocate", lambda fd, off, n: (reserved.append(n), real(fd, off, n)))
    cache.write_image_cache(_Pictures(), tmp_path, "train", {"source": "pictures"})
    assert reserved == [20 * 16 * 16 * 3]
