"""An image that breaks after its split was indexed (no capgen-prepare scan first, a file
damaged later): under data.on_bad_sample=skip training leaves it out of its batch, reports
the count per epoch and completes, with the loader's order and position unchanged; under
error the run stops with the one-paragraph error naming the file, from a DataLoader worker
too."""

import logging
from pathlib import Path

import hydra
import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from capgen.commands.train.fit import train
from capgen.data.datamodule import CaptionPairs, CyclingReferenceSampler, TrainLoader, collate_training
from capgen.data.images import BadSampleError
from capgen.runs.records import one_paragraph

from helpers.fixtures_real import make_flickr

LOGGER = "capgen.data.datamodule"


@pytest.fixture
def flickr(tmp_path):
    """Flickr8k with 4 training images (12 in all, round-robin) and the file of the one to break."""
    root = tmp_path / "flickr"
    facts = make_flickr(root, "8k", n=12)
    bad_id = facts["splits"]["train"][1]
    return root, facts, bad_id, facts["paths"][bad_id]


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def cfg_for(make_cfg, root: Path, *overrides: str):
    return make_cfg("data=flickr8k", f"data.root={root}", "data.source.image_size=32", "data.min_freq=1",
                    "model=lstm", "test=false", "trainer.limit_train_batches=1.0", *overrides)


class BreakAfterIndexing(L.Callback):
    """Truncates `path` when fitting starts: the splits are indexed by then (the vocabulary
    needed the train split), and no training image has been read yet."""

    def __init__(self, path: Path):
        self.path = path

    def on_fit_start(self, trainer, pl_module):
        truncate(self.path)


class Batches(L.Callback):
    """The image ids of every training batch (None for a batch Lightning skipped), per epoch."""

    def __init__(self):
        self.ids: dict[int, list[list[int] | None]] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.ids.setdefault(trainer.current_epoch, []).append(None if batch is None else batch.image_ids.tolist())


def with_callbacks(monkeypatch, *extra: L.Callback) -> None:
    original = L.Trainer.__init__

    def init(self, *args, callbacks=(), **kw):
        original(self, *args, callbacks=[*callbacks, *extra], **kw)

    monkeypatch.setattr(L.Trainer, "__init__", init)


@pytest.mark.parametrize("workers", [0, 1])
def test_skip_leaves_the_image_out_of_its_batch_and_reports_it_each_epoch(make_cfg, monkeypatch, caplog, flickr, workers):
    root, facts, bad_id, bad = flickr
    batches = Batches()
    with_callbacks(monkeypatch, BreakAfterIndexing(bad), batches)
    cfg = cfg_for(make_cfg, root, "data.batch_size=2", f"data.num_workers={workers}", "data.on_bad_sample=skip",
                  "trainer.max_epochs=2")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        train(cfg)
    good = sorted(set(facts["splits"]["train"]) - {bad_id})
    for epoch in (0, 1):
        ids = batches.ids[epoch]
        assert sorted(len(b) for b in ids) == [1, 2]  # two batches of 2; one lost its broken image
        assert sorted(i for b in ids for i in b) == good
        assert f"epoch {epoch}: 1 unreadable training image left out of its batch (data.on_bad_sample=skip): {bad}; " \
               "the first: corrupt or truncated image" in caplog.text
    assert caplog.text.count("unreadable training image") == 2  # once per epoch


def test_a_batch_that_loses_every_image_is_skipped_as_a_step(make_cfg, monkeypatch, caplog, flickr):
    root, facts, bad_id, bad = flickr
    batches = Batches()
    steps = []

    class Steps(L.Callback):
        def on_train_end(self, trainer, pl_module):
            steps.append(trainer.global_step)

    with_callbacks(monkeypatch, BreakAfterIndexing(bad), batches, Steps())
    cfg = cfg_for(make_cfg, root, "data.batch_size=1", "data.on_bad_sample=skip", "trainer.max_epochs=2")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        train(cfg)
    for epoch in (0, 1):
        ids = batches.ids[epoch]
        assert len(ids) == 4 and ids.count(None) == 1  # the loader's 4 batches, the broken image's as None
        assert sorted(b[0] for b in ids if b is not None) == sorted(set(facts["splits"]["train"]) - {bad_id})
    assert steps == [6]  # 3 optimizer steps per epoch: the empty batch's was skipped
    assert f"epoch 1: 1 unreadable training image left out of its batch (data.on_bad_sample=skip): {bad}" in caplog.text


@pytest.mark.parametrize("workers", [0, 1])
def test_error_stops_training_with_one_paragraph_naming_the_file(make_cfg, monkeypatch, flickr, workers):
    root, _, _, bad = flickr
    with_callbacks(monkeypatch, BreakAfterIndexing(bad))
    cfg = cfg_for(make_cfg, root, "data.batch_size=2", f"data.num_workers={workers}", "data.on_bad_sample=error")
    with pytest.raises(BadSampleError) as err:
        train(cfg)
    message = str(err.value)
    assert "\n" not in message.strip() and message.startswith(f"{bad}: corrupt or truncated image")
    assert "set data.on_bad_sample=skip" in message and "capgen-prepare" in message


def skipping_datamodule(make_cfg, root: Path, batch_size: int):
    return hydra.utils.instantiate(cfg_for(make_cfg, root, f"data.batch_size={batch_size}", "data.on_bad_sample=skip").data)


def test_resuming_mid_epoch_continues_with_the_same_batches(make_cfg, flickr):
    """The loader's position counts a batch that lost images (here all of one) like any other,
    so a loader restored from its state serves exactly the rest of the epoch."""
    root, _, _, bad = flickr
    truncate(bad)  # indexing only lists the files, so the loaders read it broken all the same
    whole = skipping_datamodule(make_cfg, root, batch_size=1).train_dataloader()
    served = [None if b is None else b.image_ids.tolist() for b in whole]
    assert len(served) == 4 and served.count(None) == 1
    for stop in range(1, 4):
        first = skipping_datamodule(make_cfg, root, batch_size=1).train_dataloader()
        it = iter(first)
        head = [next(it) for _ in range(stop)]
        resumed = skipping_datamodule(make_cfg, root, batch_size=1).train_dataloader()
        resumed.load_state_dict(first.state_dict())
        tail = [None if b is None else b.image_ids.tolist() for b in resumed]
        assert [None if b is None else b.image_ids.tolist() for b in head] + tail == served, stop


def test_under_ddp_a_batch_that_loses_every_image_stops_the_run(make_cfg, flickr):
    """One process cannot skip a step while the others wait for its gradients."""
    root, _, bad_id, bad = flickr
    truncate(bad)
    datamodule = skipping_datamodule(make_cfg, root, batch_size=1)
    pairs = CaptionPairs(datamodule.source("train"), datamodule.vocab)
    failed = []
    for rank in (0, 1):
        loader = TrainLoader(pairs, batch_size=1, sampler=CyclingReferenceSampler(pairs, num_replicas=2, rank=rank),
                             collate_fn=collate_training, on_bad_sample="skip")
        try:
            ids = [b.image_ids.tolist() for b in loader]
            assert [bad_id] not in ids
        except BadSampleError as err:
            failed.append(str(err))
    assert len(failed) == 1  # the rank whose shard holds the broken image
    assert failed[0].startswith(f"{bad}: corrupt or truncated image") and "with 2 processes" in failed[0]
    assert "\n" not in failed[0]


def test_a_loader_over_readable_images_yields_plain_batches(make_cfg, flickr):
    root, facts, _, _ = flickr
    datamodule = hydra.utils.instantiate(cfg_for(make_cfg, root, "data.batch_size=2").data)
    batches = list(datamodule.train_dataloader())
    assert len(batches) == 2 and all(b.images.dtype == torch.uint8 for b in batches)
    assert sorted(i for b in batches for i in b.image_ids.tolist()) == sorted(facts["splits"]["train"])


class FailsInWorker(Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        raise ValueError("data.root=/x: image 7 has no file\nput it there")


def test_an_error_from_a_dataloader_worker_is_one_paragraph_with_the_workers_own_message():
    with pytest.raises(ValueError) as err:
        list(DataLoader(FailsInWorker(), num_workers=1))
    assert "Original Traceback" in str(err.value)  # how torch hands it over: the worker's traceback
    assert one_paragraph(err.value) == "ValueError: data.root=/x: image 7 has no file put it there (in DataLoader worker process 0)"
    assert one_paragraph(RuntimeError("sizes differ:\n  a\n  b")) == "RuntimeError: sizes differ: a b"
    torch.manual_seed(0)  # the worker drew from the global generator; leave the next test a fixed state
