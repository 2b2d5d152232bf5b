"""The metric's state gathers across processes: two gloo ranks score like one process, and each
holds every image's caption with its own scores afterwards."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from capgen.metrics.captions import CaptionScores, score_captions, score_captions_per_image
from capgen.vocab import Vocabulary

REFS = {i: [f"a {c} {s} left of a {c2} square", f"there is a {c} {s}"]
        for i, (c, s, c2) in enumerate([("red", "circle", "blue"), ("green", "diamond", "red"), ("blue", "triangle", "green"),
                                        ("purple", "circle", "yellow"), ("yellow", "square", "red")])}
PREDS = {0: "a red circle left of a blue square", 1: "a green diamond", 2: "there is a blue square",
         3: "a purple circle left of a square", 4: "a yellow square left of a red square"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        vocab = Vocabulary.build([c for r in REFS.values() for c in r])
        metric = CaptionScores(vocab, REFS)
        # rank 0 gets images 0, 2, 4; rank 1 gets 1, 3 and a repeat of 0, as a distributed
        # sampler pads the last batch; rows of different lengths on the two ranks.
        mine = [0, 2, 4] if rank == 0 else [1, 3, 0]
        tokens = torch.nn.utils.rnn.pad_sequence([torch.tensor(vocab.encode(PREDS[i])[1:]) for i in mine], batch_first=True)
        metric.update(torch.tensor(mine), tokens)
        # scored_captions: torchmetrics hands each rank back its own rows after compute(), so
        # rows read from the metric afterwards (captions()) would be this rank's share only.
        out[rank] = metric.compute(), metric.scored_captions
    finally:
        dist.destroy_process_group()


def test_two_ranks_score_exactly_like_one_process():
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_worker, args=(2, _free_port(), out), nprocs=2, join=True)
        results = dict(out)
    expected, per_image = score_captions_per_image(PREDS, REFS)
    assert expected == score_captions(PREDS, REFS)
    rows = [(i, PREDS[i], per_image[i]["BLEU-4"], per_image[i]["CIDEr"]) for i in sorted(PREDS)]
    for scores, scored in results.values():
        assert scores == expected
        assert [(r["image_id"], r["caption"], r["BLEU-4"], r["CIDEr"]) for r in scored] == rows
