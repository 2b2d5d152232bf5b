"""capgen's speed, measured: training steps, caption decoding, data loading and scoring, for
the default shapes configuration, the reference Show-Attend-Tell configuration and the peer
settings (those of the most used self-critical captioning code).

    python scripts/benchmark.py                               # everything, on this CPU
    python scripts/benchmark.py --config reference --sections train,decode
    python scripts/benchmark.py --config peer                 # the peer settings' steps and table
    python scripts/benchmark.py --device cuda                 # on a GPU, bf16-mixed
    python scripts/benchmark.py --quick                       # a smoke run: tiny sizes, 1 repeat, one child per config
    python scripts/benchmark.py --sections startup            # start-up at COCO scale (not in the default set)

Prints tables and writes every number to --out (JSON).

Configurations
  shapes     the defaults of `capgen-train` (data=shapes, SmallCNN, 8x8 grid, the model/*.yaml
             decoders), batch 64, shapes captions.
  reference  the setting of the most widely used PyTorch Show-Attend-Tell tutorial, whose
             timings on this machine are quoted in docs/performance.md: ResNet-101 (random init),
             256x256 images, 14x14 grid, embedding/attention/decoder 512, dropout 0.5,
             vocabulary 10,000, batch 32, captions of 20 tokens (random words).
  peer       the settings at which issue 26 compares capgen with the self-critical reference code's
             att2in model (docs/performance.md, "Against the peer code at equal work"): the
             reference model (embedding/hidden/attention 512, dropout 0.5, alpha_c 1) on cached
             features, 14x14x2048 float16 as a capgen-prepare feature cache delivers them
             (random, non-negative), vocabulary 9,487 (4 specials included), captions of 16
             words, 50 images with 5 captions each (a Batch of 50 grids and 250 captions, as
             data.train_captions_per_image=5 gives). Sections train, decode and scst only (no images);
             a table of its figures at the end.

Sections
  train    one optimisation step exactly as capgen-train runs it (CaptioningModule._loss,
           its AdamW groups, gradient clipping at 5) per decoder and encoder mode:
           frozen (the encoder runs, without gradients; in bf16 where the device computes it
           natively, as capgen-train's encoder_precision=auto; --encoder-precision 32: fp32),
           features (the decoder alone on fp16 features, as with a capgen-prepare feature
           cache) and finetune (shapes: the SmallCNN trains, as by default; reference:
           ResNet-101's last 3 stages, as the tutorial's fine-tuning). Each runs in a fresh
           child process, so its peak memory (max RSS on CPU, max allocated on CUDA) is its
           own (--quick: a configuration's steps in one child). peer: the attention model from the feature cache only, on the 50 images x 5
           captions.
  decode   captions/s of greedy, beam 3 and beam 5 from encoder features at several batch
           sizes; the batch decoded at once vs one image at a time; images/s of the other
           decoding controls (beam 3 keeping its 3 best, beam 3 with min length, no repeated
           bigram and no <unk>, diverse beam 6 in 3 groups, 5 samples with top-p 0.9) at the
           largest batch; and for the reference,
           images to captions including the encoder; beam 3 captions/s of the attention LSTM
           and the Transformer, with and without its key/value cache, all untrained on the
           same features, every caption held to max_len words. Shapes: the attention model trained
           100 steps so that it ends its captions as a trained one does. Reference: untrained,
           as the quoted figures were, so no caption ends: every one runs to 50 words.
           peer: beam 3 on the 50 feature grids only, at most 16 words, untrained (every
           caption runs its 16 words).
  data     training-epoch images/s through the DataLoader from raw images (shapes: generated,
           and after the warm-up epoch kept in memory by the source; reference: 640x480 JPEGs in
           COCO's layout, decoded and resized to 256), from the image cache and from the feature
           cache, with 0 and more workers.
  metrics  seconds to score 5,000 images with the validation metrics (BLEU, CIDEr-D, capgen's
           tokenizer), shapes captions against 4 references each (once, under the first
           configuration: scoring does not depend on the model).
  scst     shapes and peer: a self-critical training step (5 sampled captions per image, the
           CIDEr-D reward, the sampler's log-probabilities, AdamW, clipping at 5) against a
           cross-entropy step of the same model on the same batch, timed in alternation.
           shapes: batch 64, mean baseline, the attention model trained 100 steps, as in
           decode, so its samples end as a trained model's do; the reward alone for the step's
           320 sampled captions, with document frequencies from the 10,000 training images.
           peer: the 50 images (the cross-entropy step on their 250 captions), greedy
           baseline, at most 16 words, untrained (every sample runs its 16 words); document
           frequencies from a Karpathy-sized train split (113,287 images x 5 captions of 8-16
           words drawn from a Zipfian distribution over the vocabulary; about 20 s to build);
           the reward alone on 500 such captions (5 for each of 100 other images) at the
           default thread setting and at 1 thread in alternating pairs, alone and beside a
           second process holding one core (a 1-thread float32 matmul loop).
  encoder  the encoder alone as training runs it (shapes: the SmallCNN forward and backward;
           reference: ResNet-101's frozen forward in inference mode), contiguous against
           channels_last (and bf16 autocast where the device has native bf16, as
           encoder_precision=auto decides, or when asked for with --precision bf16-mixed) in
           alternating pairs: seconds, GFLOP/s (FLOPs counted by torch.utils.flop_counter) and
           the share of an ESTIMATED fp32 peak (below).
  startup  start-up at COCO scale (once, independent of --config): a synthetic Karpathy-sized
           COCO in a temporary folder (123,287 images, 619,489 captions of 8-16 words from a
           12k-word Zipfian vocabulary; image files are hard links to 4 JPEGs), then, each in
           a fresh process, the seconds of indexing the three splits, building the
           vocabulary, the references of val and test and the training loader; and the
           whole `capgen-train data=coco2014 debug=fast` from its launch to its first
           training step, and to its end (--quick: 1,200 images).

Every timing is the median of --repeats runs after one warm-up run.

The machine is printed first and written under "machine": CPU model, the ISA flags that decide
fp32 and bf16 speed (avx2, fma, avx512f, avx512_bf16, amx_bf16), torch threads, GPU. The fp32
peak is an estimate, not a measurement: threads (at most the cores) x clock (/proc/cpuinfo's
"cpu MHz", the nominal clock in most VMs) x fp32 FLOPs per cycle and core from the ISA, 64 with
AVX-512 and 32 with AVX2 + FMA (two FMA units of 16 or 8 lanes, 2 FLOPs each), 16 with AVX.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import hydra
import lightning as L
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image

import capgen.cli  # noqa: F401  (importing capgen.cli sets the malloc thresholds, as every command does)
from capgen import config as capgen_config
from capgen.data import CaptionDataModule
from capgen.data.cache import describe_source, write_feature_cache, write_image_cache
from capgen.data.datamodule import Batch
from capgen.data.encoder_weights import EncoderWeights, weights_fingerprint
from capgen.data.shapes import ShapesSource
from capgen.lightning import hardware, threads
from capgen.lightning.module import CaptioningModule
from capgen.lightning.threads import FreeCoreThreads
from capgen.metrics.captions import score_captions
from capgen.metrics.cider_reward import CiderDReward
from capgen.models import build_captioner, scst
from capgen.models.search import DecodeSettings
from capgen.vocab import SPECIALS, Vocabulary

DECODERS = ("rnn", "lstm", "attn", "transformer")
MODES = ("frozen", "features", "finetune")


# ----- configurations ---------------------------------------------------------------------
def model_config(config: str, decoder: str, mode: str = "frozen", quick: bool = False) -> dict:
    """{"encoder": ..., "decoder": ..., "module": ...} as plain dicts, for build_captioner."""
    capgen_config.register()
    with initialize_config_dir(config_dir=capgen_config.CONF_DIR, version_base="1.3"):
        cfg = OmegaConf.to_container(compose("train", overrides=[f"model={decoder}"]).model, resolve=True)
    if config in ("reference", "peer"):  # the peer settings' model is the reference one, on cached features
        cfg["encoder"] = {"_target_": "capgen.models.TorchvisionEncoder", "name": "resnet101", "weights": None,
                          "grid": 14, "finetune": "last" if mode == "finetune" else "frozen", "finetune_last": 3}
        if decoder == "transformer":  # the widely used captioning Transformer's sizes, 3 layers
            cfg["decoder"].update({"d_model": 512, "layers": 3, "heads": 8, "ffn_dim": 2048, "dropout": 0.1})
        else:
            dims = {"embed_dim": 512, "hidden_dim": 512, "dropout": 0.5}
            cfg["decoder"].update(dims | ({"attn_dim": 512} if decoder == "attn" else {}))
        cfg["module"]["optimizer"].update({"lr": 4e-4, "encoder_lr": 1e-4})
        cfg["module"]["objective"]["alpha_c"] = 1.0 if decoder == "attn" else 0.0
        if quick:
            cfg["encoder"].update({"name": "resnet18", "grid": 4})
    return cfg


def shapes_vocab() -> Vocabulary:
    src = ShapesSource("train", sizes={"train": 2000})
    return Vocabulary.build((c for i in range(len(src)) for c in src.captions(i)), max_len=24)


def reference_vocab(size: int, max_len: int = 50) -> Vocabulary:
    return Vocabulary([*SPECIALS, *(f"w{i}" for i in range(size - len(SPECIALS)))], max_len=max_len)


# The peer settings (issue 26): the sizes of the widely used self-critical captioning code's
# att2in recipe. quick: the reference configuration's quick encoder (ResNet-18, 4x4 grid of 512).
PEER = {"vocab": 9487, "words": 16, "images": 50, "captions_per_image": 5, "grid": 14, "feature_dim": 2048,
        "reference_images": 113_287, "reward_images": 100}
PEER_QUICK = PEER | {"vocab": 100, "images": 2, "grid": 4, "feature_dim": 512, "reference_images": 200, "reward_images": 4}


def zipf_captions(g: torch.Generator, count: int, vocab: Vocabulary, shortest: int, longest: int) -> list[list[int]]:
    """count captions of shortest..longest words drawn as real captions' words are spread:
    the vocabulary's k-th word with probability proportional to 1/k (Zipf), then <end>."""
    words = len(vocab) - len(SPECIALS)
    zipf = 1.0 / torch.arange(1, words + 1, dtype=torch.float64)
    lengths = torch.randint(shortest, longest + 1, (count,), generator=g)
    drawn = (torch.multinomial(zipf, int(lengths.sum()), replacement=True, generator=g) + len(SPECIALS)).tolist()
    ends = torch.cumsum(lengths, 0).tolist()
    return [drawn[e - n : e] + [vocab.end_id] for e, n in zip(ends, lengths.tolist())]


def make_batch(config: str, batch_size: int, quick: bool) -> tuple[Batch, Vocabulary]:
    """A training batch (uint8 images, captions <start> .. <end>) and its vocabulary. peer:
    batch_size images as a feature cache delivers them (B, P, D) float16, each with
    captions_per_image captions of 16 words (image-major, as data.train_captions_per_image gives them)."""
    g = torch.Generator().manual_seed(0)
    if config == "peer":
        s = PEER_QUICK if quick else PEER
        vocab = reference_vocab(s["vocab"], max_len=s["words"])
        # non-negative, as a ResNet's features after its last ReLU
        feats = torch.randn(batch_size, s["grid"] ** 2, s["feature_dim"], generator=g).relu_().half()
        rows = batch_size * s["captions_per_image"]
        captions = torch.tensor([[vocab.start_id, *c] for c in zipf_captions(g, rows, vocab, s["words"], s["words"])])
        return Batch(feats, captions, (captions != 0).sum(1), torch.arange(batch_size)), vocab
    if config == "shapes":
        vocab, src = shapes_vocab(), ShapesSource("train", sizes={"train": batch_size})
        images = torch.stack([torch.from_numpy(src.image(i)).permute(2, 0, 1) for i in range(batch_size)])
        caps = [torch.tensor(vocab.encode(src.captions(i)[0])) for i in range(batch_size)]
        captions = torch.nn.utils.rnn.pad_sequence(caps, batch_first=True)
    else:
        vocab = reference_vocab(100 if quick else 10_000)
        side, tokens = (64, 8) if quick else (256, 20)
        images = torch.randint(0, 256, (batch_size, 3, side, side), dtype=torch.uint8, generator=g)
        captions = torch.randint(len(SPECIALS), len(vocab), (batch_size, tokens), generator=g)
        captions[:, 0], captions[:, -1] = vocab.start_id, vocab.end_id
    lengths = (captions != 0).sum(1)
    return Batch(images, captions, lengths, torch.arange(batch_size)), vocab


THREADS: FreeCoreThreads | None = None  # --threads auto: the policy capgen's commands follow


def threads_setting(given: str) -> str:
    """What set the thread count, for the JSON: auto (and the count now), fixed by the
    environment, or --threads."""
    if THREADS is not None:
        return f"auto (now {THREADS.threads})"
    if given == "auto":
        return f"{torch.get_num_threads()} (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')})"
    return given


def seconds(fn, sync=lambda: None) -> float:
    """Wall time of one call of fn, device work included (the thread check before it, as
    capgen's commands do before each batch, is not)."""
    if THREADS is not None:
        THREADS.check()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def median_seconds(fn, repeats: int, sync=lambda: None) -> float:
    seconds(fn, sync)  # warm-up
    return statistics.median(seconds(fn, sync) for _ in range(repeats))


def _sync(device: torch.device):
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def _autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")


# ----- training step (each in a child process) --------------------------------------------
def train_step_child(spec: dict) -> dict:
    """One measurement: spec = {config, decoder, mode, batch_size, device, precision, repeats, quick}."""
    device = torch.device(spec["device"])
    batch, vocab = make_batch(spec["config"], spec["batch_size"], spec["quick"])
    cfg = model_config(spec["config"], spec["decoder"], spec["mode"], spec["quick"])
    torch.manual_seed(0)
    net = build_captioner(cfg, len(vocab))
    hardware.configure_encoder(net.encoder, spec["channels_last"], device.type,  # as capgen-train does
                               precision=spec["encoder_precision"], surrounding=spec["precision"])
    if spec.get("compile"):
        net.use_torch_compile()
    # the optimiser without its schedule: a schedule needs a Trainer and costs nothing per step
    module_cfg = {k: v for k, v in cfg["module"].items() if k != "_target_"} | {"scheduler": {"name": "none"}}
    module = CaptioningModule(net, vocab, net_config=None, **module_cfg).to(device).train()
    optimizer = module.configure_optimizers()
    batch = Batch(*(x.to(device) for x in batch))
    if spec["mode"] == "features" and not batch.images.is_floating_point():
        # what a feature cache delivers: the frozen encoder's fp16 output (the peer batch is that already)
        with torch.no_grad():
            batch = batch._replace(images=net.encode(batch.images).half())
    params = [p for p in module.parameters() if p.requires_grad]

    def step():
        with _autocast(device, spec["precision"]):
            loss, _ = module._loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        optimizer.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = median_seconds(step, spec["repeats"], _sync(device))
    out = {"step_s": seconds, "images_per_s": spec["batch_size"] / seconds,
           "params_updated": sum(p.numel() for p in params if p.grad is not None)}  # fmt: skip
    if device.type == "cuda":
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    return out


def train_section(config: str, args) -> dict:
    batch_size = {"shapes": 4 if args.quick else 64, "reference": 2 if args.quick else 32,
                  "peer": (PEER_QUICK if args.quick else PEER)["images"]}[config]
    results = {"batch_size": batch_size}
    if config == "peer":  # 5 captions per image, cached features, the attention model: the peer's att2in recipe
        results["captions_per_image"] = PEER["captions_per_image"]
    specs = {}
    for decoder in args.decoders:
        for mode in MODES:
            if config == "shapes" and mode == "frozen":
                continue  # the SmallCNN is trained with its decoder: finetune is the default
            if config == "peer" and (decoder, mode) != ("attn", "features"):
                continue
            specs[f"{decoder}/{mode}"] = {
                "config": config, "decoder": decoder, "mode": mode, "batch_size": batch_size, "device": args.device,
                "precision": args.precision, "repeats": args.repeats, "quick": args.quick, "compile": args.compile,
                "channels_last": args.channels_last, "encoder_precision": args.encoder_precision}
    # A child process per measurement, so that each peak RSS is that step's own. --quick (a check
    # that the harness runs) measures a configuration's steps in one child: each child is a torch
    # start-up of about 6 s, and quick sizes make no peak RSS worth comparing.
    for keys in [list(specs)] if args.quick else [[key] for key in specs]:
        child = [sys.executable, __file__, "--child", json.dumps([specs[k] for k in keys]), "--threads", args.threads]
        run = subprocess.run(child, capture_output=True, text=True)
        if run.returncode != 0:
            raise RuntimeError(f"training-step child {keys} failed:\n{run.stderr[-3000:]}")
        for key, r in zip(keys, json.loads(run.stdout.strip().splitlines()[-1]), strict=True):
            results[key] = r
            decoder, mode = key.split("/")
            print(f"  {config} {decoder:4} {mode:8} {r['step_s']:8.3f} s/step  peak RSS {r['peak_rss_mb']:7.0f} MB", flush=True)
    return results


# ----- decoding ---------------------------------------------------------------------------
@functools.cache
def _trained_shapes_attn_weights(steps: int) -> dict[str, torch.Tensor]:
    """The weights _trained_shapes_attn trains (on the shapes vocabulary), once per process."""
    return _trained_shapes_attn(shapes_vocab(), steps).state_dict()


def trained_shapes_attn(vocab: Vocabulary, steps: int) -> torch.nn.Module:
    """A new copy of the shapes attention model trained `steps` steps (trained once), in eval mode."""
    net = build_captioner(model_config("shapes", "attn"), len(vocab))
    net.load_state_dict(_trained_shapes_attn_weights(steps))
    return net.eval()


def _trained_shapes_attn(vocab: Vocabulary, steps: int) -> torch.nn.Module:
    """The default shapes attention model after `steps` Adam steps: it ends most captions."""
    src = ShapesSource("train", sizes={"train": 1024})
    torch.manual_seed(0)
    net = build_captioner(model_config("shapes", "attn"), len(vocab))
    images = torch.stack([torch.from_numpy(src.image(i)).permute(2, 0, 1) for i in range(len(src))])
    captions = torch.nn.utils.rnn.pad_sequence(
        [torch.tensor(vocab.encode(src.captions(i)[0])) for i in range(len(src))], batch_first=True
    )
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3)
    pick = torch.Generator().manual_seed(0)
    net.train()
    for _ in range(steps):
        idx = torch.randint(0, len(src), (64,), generator=pick)
        caps = captions[idx]
        caps = caps[:, : int((caps != 0).sum(1).max())]
        logits, _ = net(images[idx], caps[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), caps[:, 1:].flatten(), ignore_index=0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def batched_against_one_at_a_time(generate, feats: torch.Tensor, beam: int, n_one: int, args, sync) -> dict:
    """The first n_one images one at a time against the same images batched: what batching
    gains. Timed in alternation, the speedup the median of the pairs' ratios: on a shared
    2-core VM what the second core is worth drifts over seconds (it moved the batched times
    1.0-1.6x between runs, the one-at-a-time ones hardly), and pairs see the same."""

    def one_by_one():
        return [generate(feats[i : i + 1], beam) for i in range(n_one)]

    def batch():
        return generate(feats[:n_one], beam)

    one, batched = [], []  # no warm-up needed: the caller already ran batch 1 and larger ones
    for _ in range(1 if args.quick else 5):  # pairs
        one.append(seconds(one_by_one, sync))
        batched.append(seconds(batch, sync))
    return {"one_at_a_time_captions_per_s": n_one / statistics.median(one),
            "batched_captions_per_s": n_one / statistics.median(batched),
            "batched_speedup": statistics.median(o / b for o, b in zip(one, batched)), "compared_images": n_one}


def decode_section(config: str, args) -> dict:
    device = torch.device(args.device)
    sync = _sync(device)
    if config == "shapes":
        vocab = shapes_vocab()
        net = trained_shapes_attn(vocab, 4 if args.quick else 100)
        val = ShapesSource("val", sizes={"val": 64})
        images = torch.stack([torch.from_numpy(val.image(i)).permute(2, 0, 1) for i in range(len(val))])
        max_len, sizes, n_one = vocab.max_len, ((1, 8) if args.quick else (1, 16, 64)), 8 if args.quick else 64
    elif config == "peer":  # beam 3 on the batch's cached features only; untrained, so no caption ends
        settings = PEER_QUICK if args.quick else PEER
        batch, vocab = make_batch("peer", settings["images"], args.quick)
        torch.manual_seed(0)
        net = build_captioner(model_config("peer", "attn", "features", args.quick), len(vocab)).eval()
        images = batch.images
        max_len, sizes, n_one = settings["words"], (len(images),), 0
    else:
        vocab = reference_vocab(100 if args.quick else 10_000)
        torch.manual_seed(0)
        net = build_captioner(model_config("reference", "attn", quick=args.quick), len(vocab)).eval()
        hardware.configure_encoder(net.encoder, args.channels_last, device.type,  # as capgen-caption does
                                   precision=args.encoder_precision)
        n = 4 if args.quick else 32
        images = torch.randint(0, 256, (n, 3, 64 if args.quick else 256, 64 if args.quick else 256), dtype=torch.uint8)
        max_len, sizes, n_one = (8 if args.quick else 50), ((1, 4) if args.quick else (1, 8, 32)), (2 if args.quick else 4)
    net = net.to(device)
    images = images.to(device)
    with torch.no_grad(), _autocast(device, args.precision):
        feats = net.encode(images)
    results = {"max_len": max_len, "images": len(images)}

    def generate(x, beam):
        with _autocast(device, args.precision):
            return net.generate(x, max_len, vocab.start_id, vocab.end_id, beam_size=beam)

    repeats = args.repeats if config == "peer" else min(args.repeats, 3)
    for name, beam in (("beam3", 3),) if config == "peer" else (("greedy", 1), ("beam3", 3), ("beam5", 5)):
        r = {}
        for b in sizes:
            x = feats[:b]
            r[f"batch{b}_captions_per_s"] = b / median_seconds(lambda x=x: generate(x, beam), repeats, sync)
        tokens = generate(feats, beam).tokens
        r.update({"ended_fraction": (tokens == vocab.end_id).any(1).float().mean().item(),
                  "mean_caption_tokens": (tokens != 0).sum(1).float().mean().item()})
        if n_one:
            r.update(batched_against_one_at_a_time(generate, feats, beam, n_one, args, sync))
        results[name] = r
        print(f"  {config} decode {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in r.items() if isinstance(v, float)), flush=True)
    if config == "peer":
        return results
    # The other decoding controls (capgen.models.search.decode), at the largest batch: images/s.
    b = sizes[-1]
    for name, settings in (("beam3_nbest3", DecodeSettings(method="beam", beam_size=3, n_best=3)),
                           ("beam3_constrained", DecodeSettings(method="beam", beam_size=3, min_len=3,
                                                                no_repeat_ngram_size=2, suppress_unk=True)),
                           ("diverse_beam6_groups3", DecodeSettings(method="diverse_beam", beam_size=6, groups=3,
                                                                    diversity_strength=0.5)),
                           ("sample5_top_p0.9", DecodeSettings(method="sample", n_best=5, top_p=0.9))):
        def decode(settings=settings):
            with _autocast(device, args.precision):
                return net.decode(feats[:b], settings, vocab.start_id, vocab.end_id, vocab.unk_id, max_len)

        results[name] = {f"batch{b}_images_per_s": b / median_seconds(decode, repeats, sync), "settings": settings.describe()}
        print(f"  {config} decode {name}: {results[name]}", flush=True)
    results["beam3_by_decoder"] = beam3_by_decoder(config, feats, vocab, max_len, args, sync)
    if config == "reference":  # images -> captions, the encoder included, beam 3
        end_to_end = median_seconds(lambda: generate(images, 3), repeats, sync)
        one = median_seconds(lambda: [generate(images[i : i + 1], 3) for i in range(n_one)], repeats, sync)
        results["images_to_captions"] = {"beam3_batch_captions_per_s": len(images) / end_to_end,
                                         "beam3_one_at_a_time_captions_per_s": n_one / one,
                                         "encoder_images_per_s": len(images) / median_seconds(
                                             lambda: net.encode(images), repeats, sync)}  # fmt: skip
        print(f"  reference images->captions: {results['images_to_captions']}", flush=True)
    return results


def beam3_by_decoder(config: str, feats: torch.Tensor, vocab: Vocabulary, max_len: int, args, sync) -> dict:
    """Beam 3 captions/s of the attention LSTM and the Transformer (with its key/value cache
    and recomputing every prefix), untrained, on the same features, every caption held to
    max_len words (min_len = max_len): equal work per caption."""
    out, settings = {}, DecodeSettings(method="beam", beam_size=3, min_len=max_len, max_len=max_len)
    for name, decoder, cache in (("attn", "attn", None), ("transformer", "transformer", True),
                                 ("transformer_no_kv_cache", "transformer", False)):  # fmt: skip
        cfg = model_config(config, decoder, quick=args.quick)
        if cache is not None:
            cfg["decoder"]["kv_cache"] = cache
        torch.manual_seed(0)
        net = build_captioner(cfg, len(vocab)).to(feats.device).eval()

        def generate(net=net):
            with _autocast(feats.device, args.precision):
                return net.decode(feats, settings, vocab.start_id, vocab.end_id, vocab.unk_id, max_len)

        out[f"{name}_captions_per_s"] = len(feats) / median_seconds(generate, min(args.repeats, 3), sync)
        out[f"{name}_mean_caption_tokens"] = (generate().tokens != 0).sum(1).float().mean().item()
    print(f"  {config} decode beam3 by decoder: " + ", ".join(f"{k} {v:.2f}" for k, v in out.items()), flush=True)
    return out


# ----- data loading -----------------------------------------------------------------------
def _write_coco(root: Path, n: int) -> None:
    """n 640x480 JPEGs (shapes scenes: photo-like edges and colours) in COCO 2014's official layout."""
    (root / "train2014").mkdir(parents=True)
    (root / "annotations").mkdir()
    scenes = ShapesSource("train", sizes={"train": n}, image_size=480)
    images, annotations = [], []
    for i in range(n):
        picture = scenes.image(i)
        name = f"COCO_train2014_{i:012d}.jpg"
        Image.fromarray(np.concatenate([picture, picture[:, :160]], axis=1)).save(root / "train2014" / name, quality=90)
        images.append({"id": i, "file_name": name})
        annotations += [{"image_id": i, "caption": c} for c in scenes.captions(i)]
    (root / "annotations" / "captions_train2014.json").write_text(json.dumps({"images": images, "annotations": annotations}))


def data_section(config: str, args) -> dict:
    """images/s of a training epoch per (data form, DataLoader workers)."""
    n = 32 if args.quick else (1024 if config == "shapes" else 128)
    batch_size = 16 if args.quick else (64 if config == "shapes" else 32)
    results = {"images": n, "batch_size": batch_size}
    with tempfile.TemporaryDirectory() as tmp:
        if config == "shapes":
            factory = functools.partial(ShapesSource, sizes={"train": n})
            encoder_cfg = model_config("shapes", "attn")["encoder"]
        else:
            from capgen.data.karpathy import Coco2014Source

            _write_coco(Path(tmp) / "coco", n)
            factory = functools.partial(Coco2014Source, root=str(Path(tmp) / "coco"), image_size=256)
            encoder_cfg = model_config("reference", "attn", quick=args.quick)["encoder"]
        cache = Path(tmp) / "cache"
        cache.mkdir()
        source = factory(split="train")
        write_image_cache(source, cache, "train", describe_source(factory, "train", source))
        torch.manual_seed(0)
        encoder = hydra.utils.instantiate(encoder_cfg)
        write_feature_cache(cache, "train", encoder, encoder_cfg)
        weights = EncoderWeights(weights_fingerprint(encoder), "the benchmark's encoder", "")  # the cache's own
        forms = {"raw": {}, "image_cache": {"cache_dir": str(cache)},
                 "feature_cache": {"cache_dir": str(cache), "use_features": True, "encoder": encoder_cfg,
                                   "encoder_weights": weights}}
        for form, kw in forms.items():
            for workers in (0, 1, 2):
                dm = CaptionDataModule(source=factory, batch_size=batch_size, num_workers=workers, max_len=24, **kw)
                loader = dm.train_dataloader()  # persistent workers: started once, in the warm-up epoch
                epoch = median_seconds(lambda: sum(len(b.images) for b in loader), args.repeats)
                results[f"{form}_workers{workers}_images_per_s"] = len(loader) * batch_size / epoch
            print(f"  {config} data {form}: " + ", ".join(
                f"{w} workers {results[f'{form}_workers{w}_images_per_s']:.0f}/s" for w in (0, 1, 2)), flush=True)  # fmt: skip
    return results


# ----- metrics ----------------------------------------------------------------------------
def metrics_section(config: str, args) -> dict:
    n = 200 if args.quick else 5000
    src = ShapesSource("val", sizes={"val": n})
    predictions = {i: src.captions(i)[0] for i in range(n)}
    references = {i: src.captions(i)[1:] for i in range(n)}
    t0 = time.perf_counter()
    scores = score_captions(predictions, references, metrics=["BLEU", "CIDEr"], tokenizer="python")
    seconds = time.perf_counter() - t0
    print(f"  validation metrics on {n} images: {seconds:.2f} s (CIDEr {scores['CIDEr']:.3f})", flush=True)
    return {"images": n, "references_per_image": 4, "val_metrics_s": seconds}


# ----- self-critical training -------------------------------------------------------------
class ScstSetting(NamedTuple):
    """What the scst section trains and rewards: net, its vocabulary, one batch whose image ids
    the reward has references for, the reward (built in build_s seconds from `images` images),
    the baseline and the sampled captions' most words."""

    net: torch.nn.Module
    vocab: Vocabulary
    batch: Batch
    reward: CiderDReward
    build_s: float
    images: int
    baseline: str
    max_len: int


def shapes_scst_setting(args) -> ScstSetting:
    """The attention model trained 100 steps, a batch of 64 training images, the mean baseline;
    document frequencies from the 10,000 training images."""
    batch_size = 4 if args.quick else 64
    vocab = shapes_vocab()
    train_src = ShapesSource("train", sizes={"train": 200 if args.quick else 10_000})
    references = {train_src.image_id(i): train_src.captions(i) for i in range(len(train_src))}
    t0 = time.perf_counter()
    reward = CiderDReward.from_captions(references, vocab)  # tokenizing the captions included
    build_s = time.perf_counter() - t0
    batch, _ = make_batch("shapes", batch_size, args.quick)  # the first training images
    batch = batch._replace(image_ids=torch.tensor([train_src.image_id(i) for i in range(batch_size)]))
    net = trained_shapes_attn(vocab, 4 if args.quick else 100)
    return ScstSetting(net, vocab, batch, reward, build_s, len(train_src), "mean", vocab.max_len)


def peer_references(vocab: Vocabulary, images: int) -> dict[int, list[list[int]]]:
    """A training split's references: 5 captions of 8-16 Zipfian words per image (capgen-prepare's
    synthetic COCO draws its words so), image ids 0..images-1; the peer batch's images are the first."""
    captions = zipf_captions(torch.Generator().manual_seed(1), 5 * images, vocab, 8, 16)
    return {i: captions[5 * i : 5 * i + 5] for i in range(images)}


def peer_scst_setting(args) -> ScstSetting:
    """The peer settings' untrained model (every sample runs its 16 words), its batch of 50
    cached-feature grids, the greedy baseline; document frequencies from a Karpathy-sized train
    split (113,287 images, the size of COCO's train + restval)."""
    settings = PEER_QUICK if args.quick else PEER
    batch, vocab = make_batch("peer", settings["images"], args.quick)
    references = peer_references(vocab, settings["reference_images"])
    t0 = time.perf_counter()
    reward = CiderDReward(references, len(vocab))
    build_s = time.perf_counter() - t0
    torch.manual_seed(0)
    net = build_captioner(model_config("peer", "attn", "features", args.quick), len(vocab))
    return ScstSetting(net, vocab, batch, reward, build_s, len(references), "greedy", settings["words"])


def scst_section(config: str, args) -> dict:
    """SCST step vs XE step on one batch, and the reward alone: for shapes its share of the
    SCST step, for the peer settings on 500 captions beside a busy second process."""
    device, sync = torch.device(args.device), _sync(torch.device(args.device))
    samples = 5
    setting = peer_scst_setting(args) if config == "peer" else shapes_scst_setting(args)
    net, vocab, reward = setting.net, setting.vocab, setting.reward.to(device)
    hp = model_config(config, "attn", "features", args.quick)["module"]
    module_cfg = {k: v for k, v in hp.items() if k != "_target_"} | {"scheduler": {"name": "none"}}
    module = CaptioningModule(net, vocab, net_config=None, **module_cfg).to(device).train()
    optimizer = module.configure_optimizers()
    if config == "peer":  # the update's work is done, its size zero: untrained, every sample runs its 16 words
        for group in optimizer.param_groups:
            group["lr"] = 0.0
    batch = Batch(*(x.to(device) for x in setting.batch))
    params = [p for p in module.parameters() if p.requires_grad]
    last = {}

    def update(loss):
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        optimizer.step()

    def xe_step():
        with _autocast(device, args.precision):
            loss, _ = module._loss(batch)
        update(loss)

    def scst_step():
        with _autocast(device, args.precision):
            out = scst.self_critical_step(net, batch.images, batch.image_ids, reward, vocab.start_id, vocab.end_id,
                                          setting.max_len, samples, setting.baseline)
        update(out.loss)
        last["tokens"] = out.tokens

    # The weights move with every step; both kinds stay near the trained model over the few
    # steps timed. Alternated, so that both see the same share of a shared machine.
    xe_step(), scst_step()  # warm-up
    xe, sc = [], []
    for _ in range(args.repeats):
        xe.append(seconds(xe_step, sync))
        sc.append(seconds(scst_step, sync))
    tokens = last["tokens"]
    results = {"batch_size": len(batch.images), "captions_per_image_xe": batch.captions_per_image, "samples": samples,
               "baseline": setting.baseline, "max_len": setting.max_len, "captions": len(tokens),
               "xe_step_s": statistics.median(xe), "scst_step_s": statistics.median(sc),
               "scst_over_xe": statistics.median(s / x for s, x in zip(sc, xe)),
               "reward_build_s": setting.build_s, "reward_images": setting.images,
               "mean_sample_tokens": (tokens != 0).sum(1).float().mean().item()}  # fmt: skip
    print(f"  {config} scst: XE step {results['xe_step_s']:.3f} s, SCST step {results['scst_step_s']:.3f} s "
          f"({results['scst_over_xe']:.2f}x; {setting.baseline} baseline, {samples} samples per image, "
          f"{results['mean_sample_tokens']:.1f} tokens each)", flush=True)
    if config == "peer":
        results["reward"] = peer_reward(setting, len(batch.images), args, sync)
        return results
    ids = batch.image_ids.repeat_interleave(samples)
    reward_s = median_seconds(lambda: reward(ids, tokens), max(args.repeats, 5), sync)
    results.update({"reward_s": reward_s, "reward_per_320_captions_s": reward_s * 320 / len(tokens),
                    "reward_share_of_scst_step": reward_s / statistics.median(sc)})
    print(f"  shapes reward: {results['reward_per_320_captions_s'] * 1e3:.1f} ms per 320 captions "
          f"({100 * results['reward_share_of_scst_step']:.1f}% of the SCST step)", flush=True)
    return results


@contextlib.contextmanager
def busy_core():
    """A second process holding one core for the block: a 1-thread float32 matmul loop."""
    code = "import torch\ntorch.set_num_threads(1)\na = torch.randn(512, 512)\nprint(flush=True)\nwhile True:\n    a @ a"
    proc = subprocess.Popen([sys.executable, "-c", code], env=os.environ | {"OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, text=True)
    try:
        proc.stdout.readline()  # torch imported: the loop runs
        time.sleep(1.5)  # a whole second of it before the thread policy's next look at the load
        yield
    finally:
        proc.kill()
        proc.wait()


def one_thread_seconds(fn, sync) -> float:
    """Wall time of one call of fn at 1 thread, the thread count restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t0 = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - t0
    finally:
        torch.set_num_threads(before)


def peer_reward(setting: ScstSetting, first_image: int, args, sync) -> dict:
    """The reward alone on 500 captions (5 for each of 100 reference images after the batch's,
    drawn as the references are), at the default thread setting and at 1 thread in alternating
    pairs, alone and beside a second process that holds one core (busy_core). Issue 26 asks the
    default setting beside the busy process to stay within 1.5x of the 1-thread time."""
    images = (PEER_QUICK if args.quick else PEER)["reward_images"]
    g = torch.Generator().manual_seed(2)
    captions = zipf_captions(g, 5 * images, setting.vocab, 8, 16)
    tokens = torch.nn.utils.rnn.pad_sequence([torch.tensor(c) for c in captions], batch_first=True)  # (500, L)
    ids = torch.arange(first_image, first_image + images).repeat_interleave(5)  # (500,)

    def call():
        return setting.reward(ids, tokens)

    out: dict = {"captions": len(captions), "second_process": "a 1-thread float32 512x512 matmul loop",
                 "default_threads": threads_setting(args.threads)}
    for load in ("alone", "busy"):
        with busy_core() if load == "busy" else contextlib.nullcontext():
            seconds(call, sync), one_thread_seconds(call, sync)  # warm-up
            default, single = [], []
            for _ in range(5 * max(args.repeats, 5)):  # calls of about 10 ms: many pairs
                default.append(seconds(call, sync))
                single.append(one_thread_seconds(call, sync))
            out[f"default_{load}_s"], out[f"1_thread_{load}_s"] = statistics.median(default), statistics.median(single)
            out[f"default_over_1_thread_{load}"] = statistics.median(d / s for d, s in zip(default, single))
            out[f"load_average_{load}"] = os.getloadavg()[0]
            if load == "busy":
                out["default_threads_busy"] = threads_setting(args.threads)
    out["default_busy_over_1_thread_alone"] = out["default_busy_s"] / out["1_thread_alone_s"]
    print(f"  peer reward, {len(captions)} captions: default threads {out['default_alone_s'] * 1e3:.1f} ms alone, "
          f"{out['default_busy_s'] * 1e3:.1f} ms beside a busy process ({out['default_threads_busy']}); 1 thread "
          f"{out['1_thread_alone_s'] * 1e3:.1f} / {out['1_thread_busy_s'] * 1e3:.1f} ms; default beside the busy "
          f"process / 1 thread alone {out['default_busy_over_1_thread_alone']:.2f} (issue 26: <= 1.5)", flush=True)
    return out


# ----- encoder ----------------------------------------------------------------------------
def cpu_ghz() -> float | None:
    """The clock /proc/cpuinfo states (in most VMs the nominal one); None where it says none."""
    try:
        with open("/proc/cpuinfo") as f:
            mhz = [float(line.split(":")[1]) for line in f if line.startswith("cpu MHz")]
    except OSError:
        return None
    return mhz[0] / 1000 if mhz else None


def fp32_flops_per_cycle(isa: dict) -> int:
    """Per core: two FMA units of 16 (AVX-512) or 8 (AVX2) fp32 lanes, 2 FLOPs per FMA."""
    if isa.get("avx512f"):
        return 64
    if isa.get("avx2") and isa.get("fma"):
        return 32
    return 16  # AVX without FMA, or not x86: a guess


def fp32_peak(machine: dict) -> dict:
    """An ESTIMATE of the fp32 peak of the threads torch uses (see the module docstring)."""
    ghz, per_cycle = cpu_ghz(), fp32_flops_per_cycle(machine["isa"])
    cores = min(machine["threads"], machine["cores"] or machine["threads"])
    gflops = cores * ghz * per_cycle if ghz else None
    return {"estimate": True, "cores": cores, "ghz": ghz, "flops_per_cycle_per_core": per_cycle, "gflops": gflops}


def encoder_section(config: str, args) -> dict:
    """The encoder alone: contiguous vs channels_last (vs bf16), alternating pairs, GFLOP/s."""
    from torch.utils.flop_counter import FlopCounterMode

    device = torch.device(args.device)
    sync = _sync(device)
    training = config == "shapes"  # the SmallCNN trains with its decoder; ResNet-101 is frozen
    enc_cfg = model_config(config, "attn", "finetune" if training else "frozen", args.quick)["encoder"]
    torch.manual_seed(0)
    plain = hydra.utils.instantiate(enc_cfg).to(device).train(training)
    nhwc = copy.deepcopy(plain)
    nhwc.set_memory_format(channels_last=True)
    batch, side = {"shapes": (8, 96) if args.quick else (64, 96), "reference": (2, 64) if args.quick else (32, 256)}[config]
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch, 3, side, side), dtype=torch.uint8, generator=g).to(device)
    native_bf16 = hardware.native_bf16(device.type) is not None  # where encoder_precision=auto uses it
    variants = {"contiguous": (plain, False), "channels_last": (nhwc, False)}
    if native_bf16 or args.precision == "bf16-mixed":
        variants["channels_last_bf16"] = (nhwc, True)

    def run(encoder, bf16):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            if training:
                encoder(images).float().mean().backward()
            else:
                with torch.inference_mode():
                    encoder(images)

    with FlopCounterMode(display=False) as counter:
        run(plain, False)
    flops = counter.get_total_flops()
    times = {name: [] for name in variants}
    for encoder, bf16 in variants.values():
        seconds(lambda: run(encoder, bf16), sync)  # warm-up
    for _ in range(args.repeats):
        for name, (encoder, bf16) in variants.items():
            times[name].append(seconds(lambda: run(encoder, bf16), sync))
    peak = args.peak["gflops"] if device.type == "cpu" else None
    results = {"encoder": enc_cfg.get("name", enc_cfg["_target_"].rsplit(".", 1)[-1]), "batch_size": batch,
               "image_side": side, "pass": "forward+backward (training)" if training else "forward (frozen, inference mode)",
               "gflop": flops / 1e9, "auto_channels_last": hardware.prefers_channels_last(device.type),
               "bf16": "measured" if "channels_last_bf16" in variants else
                       f"not measured: no native bf16 on this CPU ({hardware.EMULATED_BF16_SLOWDOWN})"}  # fmt: skip
    for name, ts in times.items():
        s_med = statistics.median(ts)
        r = {"s": s_med, "images_per_s": batch / s_med, "gflops_per_s": flops / 1e9 / s_med}
        if peak:
            r["share_of_estimated_fp32_peak"] = r["gflops_per_s"] / peak
        if name != "contiguous":
            r["speedup_vs_contiguous"] = statistics.median(c / t for c, t in zip(times["contiguous"], ts))
        results[name] = r
        share = f", {r['share_of_estimated_fp32_peak']:.0%} of the estimated fp32 peak" if peak else ""
        speedup = f", {r['speedup_vs_contiguous']:.2f}x contiguous" if "speedup_vs_contiguous" in r else ""
        print(f"  {config} encoder {results['encoder']} {results['pass']} batch {batch}: {name} {s_med:.3f} s, "
              f"{r['gflops_per_s']:.1f} GFLOP/s{share}{speedup}", flush=True)
    return results


# ----- start-up at COCO scale -------------------------------------------------------------
# Karpathy's COCO: 113,287 train+restval, 5,000 val and 5,000 test images, 616,767 captions in
# the real file; the synthetic one has the 619,489.
COCO_SCALE = {"images": 123_287, "captions": 619_489, "restval": 30_504, "val": 5000, "test": 5000, "words": 12_000}
QUICK_SCALE = {"images": 1200, "captions": 6030, "restval": 300, "val": 100, "test": 100, "words": 2000}


def write_synthetic_coco(root: Path, images: int, captions: int, restval: int, val: int, test: int, words: int,
                         jpegs: int = 4, seed: int = 0) -> None:
    """COCO 2014's layout with a Karpathy split file of the given size: captions of 8-16 words
    drawn from a Zipfian vocabulary (word k with probability proportional to 1/k), written as
    real captions are ("A man riding ... ."), with Karpathy's "tokens" beside each; the image
    files are hard links to `jpegs` 640x480 JPEGs, one name per image in train2014/ or val2014/."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocabulary: dict[str, None] = {}
    while len(vocabulary) < words:
        vocabulary["".join(rng.choice(letters, int(rng.integers(2, 10))))] = None
    words_by_rank = np.array(list(vocabulary), dtype=object)
    zipf = 1.0 / np.arange(1, words + 1)
    per_image = np.full(images, captions // images)
    per_image[rng.choice(images, captions - int(per_image.sum()), replace=False)] += 1  # 5 or 6 each
    lengths = rng.integers(8, 17, captions)
    drawn = words_by_rank[rng.choice(words, int(lengths.sum()), p=zipf / zipf.sum())]
    root.mkdir(parents=True)
    originals = []
    for k in range(jpegs):
        originals.append(root / f"original{k}.jpg")
        Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(originals[-1], quality=90)
    for part in ("train2014", "val2014"):
        (root / part).mkdir(parents=True)
    n_train = images - restval - val - test
    entries, word, caption = [], 0, 0
    for i in range(images):
        split = ("train" if i < n_train else "restval" if i < n_train + restval
                 else "val" if i < n_train + restval + val else "test")  # fmt: skip
        part = "train2014" if split == "train" else "val2014"
        cocoid = 9 + 7 * i
        name = f"COCO_{part}_{cocoid:012d}.jpg"
        os.link(originals[i % jpegs], root / part / name)
        sentences = []
        for _ in range(per_image[i]):
            tokens = drawn[word : word + lengths[caption]].tolist()
            word, caption = word + lengths[caption], caption + 1
            sentences.append({"tokens": tokens, "raw": " ".join(tokens).capitalize() + ".", "imgid": i, "sentid": caption - 1})
        entries.append({"filepath": part, "sentids": [x["sentid"] for x in sentences], "filename": name, "imgid": i,
                        "split": split, "sentences": sentences, "cocoid": cocoid})
    (root / "dataset_coco.json").write_text(json.dumps({"images": entries, "dataset": "coco"}))


def startup_child(root: str) -> dict:
    """Seconds of each start-up phase of a coco2014 run, in this fresh process: what
    capgen.commands.train.fit does before fitting, phase by phase."""
    from capgen.data.karpathy import Coco2014Source

    factory = functools.partial(Coco2014Source, root=root, karpathy_json="dataset_coco.json", image_size=256)
    dm = CaptionDataModule(source=factory, batch_size=8, min_freq=5, max_len=16)
    out = {}
    for split in ("train", "val", "test"):
        out[f"index_{split}_s"] = seconds(lambda: dm.source(split))
    out["vocabulary_s"] = seconds(lambda: dm.vocab)
    out["references_s"] = seconds(lambda: (dm.references("val"), dm.references("test")))
    out["train_loader_s"] = seconds(dm.train_dataloader)
    out["index_s"] = sum(out[f"index_{s}_s"] for s in ("train", "val", "test"))
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["vocabulary_words"], out["train_images"] = len(dm.vocab), len(dm.source("train"))
    return out


class FirstStepTime(L.Callback):
    """Added to the timed capgen-train (+callbacks.first_step=...): writes the time the first
    training step starts to the file $CAPGEN_BENCH_FIRST_STEP."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        path = Path(os.environ["CAPGEN_BENCH_FIRST_STEP"])
        if not path.exists():
            path.write_text(repr(time.time()))


def _timed_train(root: Path, out: Path, quick: bool) -> dict:
    """The whole capgen-train command: launch to first training step, launch to exit, peak RSS."""
    first = out.with_suffix(".first_step")
    overrides = ["data=coco2014", "debug=fast", f"data.root={root}", f"hydra.run.dir={out}",
                 "+callbacks.first_step._target_=benchmark.FirstStepTime"]
    if quick:  # the harness only: small images, one batch of validation and test
        overrides += ["data.source.image_size=64", "trainer.limit_val_batches=1", "test=false"]
    env = {**os.environ, "CAPGEN_BENCH_FIRST_STEP": str(first),
           "PYTHONPATH": os.pathsep.join(p for p in (str(Path(__file__).parent), os.environ.get("PYTHONPATH")) if p)}
    launched = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "capgen.cli.train", *overrides], env=env, cwd=out.parent,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    ended = time.time()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0 or not first.exists():
        raise RuntimeError(f"capgen-train failed ({proc.returncode}):\n{err[-3000:]}")
    return {"to_first_step_s": float(first.read_text()) - launched, "end_to_end_s": ended - launched,
            "peak_rss_mb": usage.ru_maxrss / 1024}


def startup_section(config: str, args) -> dict:
    scale = QUICK_SCALE if args.quick else COCO_SCALE
    repeats = 1 if args.quick else min(args.repeats, 3)
    results: dict = {"scale": scale, "repeats": repeats, "load_average": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "coco2014"
        # Written by a child process: a child's peak RSS counts its parent's at the fork, and
        # building the file takes more memory than any start-up.
        fixture = [sys.executable, __file__, "--startup-fixture", json.dumps({"root": str(root), **scale})]
        results["fixture_s"] = seconds(lambda: subprocess.run(fixture, check=True))
        print(f"  synthetic COCO ({scale['images']} images, {scale['captions']} captions) written in "
              f"{results['fixture_s']:.1f} s", flush=True)
        phases = []
        for _ in range(repeats):
            run = subprocess.run([sys.executable, __file__, "--startup-child", str(root)], capture_output=True, text=True)
            if run.returncode != 0:
                raise RuntimeError(f"start-up child failed:\n{run.stderr[-3000:]}")
            phases.append(json.loads(run.stdout.strip().splitlines()[-1]))
            # What capgen-train imports (torch, Lightning, Hydra, torchvision, ...), in a process that does only that.
            phases[-1]["imports_s"] = seconds(lambda: subprocess.run([sys.executable, "-c", "import capgen.cli.train"],
                                                                     check=True))
        results["phases"] = {k: statistics.median(p[k] for p in phases) for k in phases[0]}
        print("  phases (median): " + ", ".join(f"{k} {v:.2f}" for k, v in results["phases"].items()), flush=True)
        runs = [_timed_train(root, Path(tmp) / f"run{k}", args.quick) for k in range(repeats)]
        results["train_command"] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        results["train_command_runs"] = runs
        print("  capgen-train data=coco2014 debug=fast (median): " + ", ".join(
            f"{k} {v:.1f}" for k, v in results["train_command"].items()), flush=True)
    results["load_average_after"] = os.getloadavg()
    return results


# ----- a shared machine: thread settings alone and beside a second copy ------------------
# Each setting as environment variables; "auto" is capgen's default (no variable set).
SHARING = {"auto": {}, "2 threads spinning": {"OMP_NUM_THREADS": "2"},
           "2 threads, PASSIVE": {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"},
           "1 thread": {"OMP_NUM_THREADS": "1"}}
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def _copies(command: Callable[[int], list[str]], env: dict[str, str], copies: int, cwd: Path) -> list[float]:
    """Start `copies` processes at once (copy i runs command(i)), the thread variables of this
    process's environment replaced by `env`; each one's wall time."""
    base = {k: v for k, v in os.environ.items() if k not in _THREAD_VARIABLES}
    started = time.perf_counter()
    procs = [subprocess.Popen(command(i), env=base | env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True) for i in range(copies)]  # fmt: skip
    walls = []
    for proc in procs:
        err = proc.stderr.read()
        if proc.wait() != 0:
            raise RuntimeError(f"{' '.join(proc.args)} failed ({proc.returncode}):\n{err[-3000:]}")
        walls.append(time.perf_counter() - started)
    return walls


def sharing_section(config: str, args) -> dict:
    """Each thread setting (SHARING) on its own and as two copies at once: the XE and SCST
    steps and the reward (this script's scst section in a child), and the default run's
    first epoch (capgen-train trainer.max_epochs=1 test=false logger=[]), whole process."""
    quick = ["--quick"] if args.quick else []
    short = ["+trainer.limit_train_batches=4", "+trainer.limit_val_batches=1"] if args.quick else []
    results: dict = {"load_average_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)

        def steps(i: int) -> list[str]:
            return [sys.executable, __file__, "--config", "shapes", "--sections", "scst", "--repeats", str(args.repeats),
                    *quick, "--out", str(tmp / f"steps{i}.json")]  # fmt: skip

        def train(i: int) -> list[str]:
            return [sys.executable, "-m", "capgen.cli.train", "trainer.max_epochs=1", "test=false", "logger=[]", *short,
                    f"hydra.run.dir={tmp / f'run{i}'}"]  # fmt: skip

        for name, env in SHARING.items():
            for copies in (1, 2):
                _copies(steps, env, copies, tmp)
                measured = [json.loads((tmp / f"steps{i}.json").read_text())["shapes"]["scst"] for i in range(copies)]
                walls = _copies(train, env, copies, tmp)
                shutil.rmtree(tmp / "run0"), shutil.rmtree(tmp / "run1", ignore_errors=True)
                key = f"{name}, {'alone' if copies == 1 else 'two copies'}"
                r = results[key] = {
                    "threads_at_end": [json.loads((tmp / f"steps{i}.json").read_text())["threads"] for i in range(copies)],
                    "xe_step_s": statistics.median(m["xe_step_s"] for m in measured),
                    "scst_step_s": statistics.median(m["scst_step_s"] for m in measured),
                    "reward_s": statistics.median(m["reward_s"] for m in measured),
                    "first_epoch_run_s": statistics.median(walls)}
                print(f"  {key:32s} XE step {r['xe_step_s'] * 1e3:6.0f} ms, SCST step {r['scst_step_s'] * 1e3:6.0f} ms, "
                      f"reward {r['reward_s'] * 1e3:5.1f} ms, first-epoch run {r['first_epoch_run_s']:5.1f} s", flush=True)
    results["load_average_after"] = os.getloadavg()
    return results


SECTIONS = {"train": train_section, "decode": decode_section, "data": data_section, "metrics": metrics_section,
            "scst": scst_section, "sharing": sharing_section, "encoder": encoder_section, "startup": startup_section}
# The sections each configuration has: SCST on shapes and the peer settings; those have no images (features only).
CONFIG_SECTIONS = {"shapes": tuple(SECTIONS), "reference": tuple(s for s in SECTIONS if s != "scst"),
                   "peer": ("train", "decode", "scst")}


def peer_table(r: dict) -> None:
    """The peer settings' figures in one table (issue 26's steps)."""
    rows = []
    if "train" in r and "attn/features" in r["train"]:
        tr = r["train"]
        rows.append((f"cross-entropy step, {tr['batch_size']} images x {tr['captions_per_image']} captions (own process)",
                     f"{tr['attn/features']['step_s']:.3f} s"))
    if "scst" in r:
        sc, rw = r["scst"], r["scst"]["reward"]
        rows += [("cross-entropy step, alternating with the SCST step", f"{sc['xe_step_s']:.3f} s"),
                 ("self-critical step, greedy baseline, 5 samples per image", f"{sc['scst_step_s']:.3f} s"),
                 (f"reward, {rw['captions']} captions, default threads: alone / beside a busy process",
                  f"{rw['default_alone_s'] * 1e3:.1f} / {rw['default_busy_s'] * 1e3:.1f} ms"),
                 (f"reward, {rw['captions']} captions, 1 thread: alone / beside a busy process",
                  f"{rw['1_thread_alone_s'] * 1e3:.1f} / {rw['1_thread_busy_s'] * 1e3:.1f} ms"),
                 ("reward beside a busy process, default threads / 1 thread alone",
                  f"{rw['default_busy_over_1_thread_alone']:.2f}x")]
    if "decode" in r:
        (key,) = [k for k in r["decode"]["beam3"] if k.endswith("_captions_per_s")]
        rows.append((f"beam 3, {r['decode']['images']} images, at most {r['decode']['max_len']} words",
                     f"{r['decode']['images'] / r['decode']['beam3'][key]:.3f} s"))
    width = max(len(name) for name, _ in rows) if rows else 0
    print("peer settings (issue 26):\n" + "\n".join(f"  {name:{width}s}  {value}" for name, value in rows), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="shapes,reference", help="shapes, reference, peer, or several as shapes,reference "
                    "(the default)")
    ap.add_argument("--sections", default="encoder,train,decode,data,metrics,scst", help=f"any of {', '.join(SECTIONS)}")
    ap.add_argument("--decoders", default=",".join(DECODERS), help="the training section's decoders")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--precision", default=None, help="32-true or bf16-mixed (default: 32-true on CPU, bf16-mixed on CUDA)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--compile", action="store_true", help="training steps with Captioner.use_torch_compile()")
    ap.add_argument("--quick", action="store_true", help="tiny sizes and one repeat: checks the harness runs")
    ap.add_argument("--threads", default="auto", help="torch threads: a number, or auto (the default, as capgen's "
                    "commands: one per core that other processes leave free, checked before each timed call; "
                    "OMP_NUM_THREADS in the environment fixes it)")
    ap.add_argument("--channels-last", default="auto", help="the encoder's memory format in the training and "
                    "decoding sections, as capgen-train's channels_last setting: auto, true or false")
    ap.add_argument("--encoder-precision", default="auto", help="the frozen encoder's precision in the training and "
                    "decoding sections, as capgen-train's encoder_precision setting: auto, bf16 or 32")
    ap.add_argument("--out", default="benchmark.json")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--startup-child", help=argparse.SUPPRESS)
    ap.add_argument("--startup-fixture", help=argparse.SUPPRESS)
    args = ap.parse_args()
    global THREADS
    if args.threads == "auto":
        THREADS = threads.follow_free_cores()
    elif args.threads.isdigit() and int(args.threads) > 0:
        torch.set_num_threads(int(args.threads))
    else:
        ap.error(f"--threads {args.threads}: give a number of threads or auto")
    if args.child:  # training-step measurements (a JSON list of specs), for the parent process
        print(json.dumps([train_step_child(spec) for spec in json.loads(args.child)]))
        return
    if args.startup_child:  # one measurement of the start-up phases, in a fresh process
        print(json.dumps(startup_child(args.startup_child)))
        return
    if args.startup_fixture:  # the synthetic COCO, written apart from the measuring process
        spec = json.loads(args.startup_fixture)
        write_synthetic_coco(Path(spec.pop("root")), **spec)
        return
    args.precision = args.precision or ("bf16-mixed" if args.device == "cuda" else "32-true")
    try:
        hardware.parse_channels_last(args.channels_last)
    except ValueError as e:
        ap.error(f"--channels-last: {e}")
    try:
        hardware.parse_encoder_precision(args.encoder_precision)
    except ValueError as e:
        ap.error(f"--encoder-precision: {e}")
    if args.quick:
        args.repeats = 1
    configs, sections, args.decoders = args.config.split(","), args.sections.split(","), args.decoders.split(",")
    for name, given, allowed in (("--config", configs, tuple(CONFIG_SECTIONS)), ("--sections", sections, tuple(SECTIONS)),
                                 ("--decoders", args.decoders, DECODERS)):  # fmt: skip
        bad = [x for x in given if x not in allowed]
        if bad:
            ap.error(f"{name}: unknown {bad}; choose from {', '.join(allowed)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device is visible")

    machine = hardware.machine()
    args.peak = fp32_peak(machine)
    results = {"machine": machine, "estimated_fp32_peak": args.peak, "threads": threads_setting(args.threads),
               "torch": torch.__version__, "device": args.device, "precision": args.precision,
               "repeats": args.repeats, "quick": args.quick, "compile": args.compile,
               "channels_last": args.channels_last, "encoder_precision": args.encoder_precision}  # fmt: skip
    if args.device == "cuda":
        results["gpu"] = torch.cuda.get_device_name()
    flags = ", ".join(f"{f} {'yes' if on else 'no'}" for f, on in machine["isa"].items())
    peak = f"{args.peak['gflops']:.0f} GFLOP/s" if args.peak["gflops"] else "unknown (no clock in /proc/cpuinfo)"
    print(f"machine: {machine['cpu']}, {machine['cores']} cores; {flags}; torch {machine['torch']} "
          f"({machine['torch_cpu_capability']}), {machine['threads']} threads; GPU: {machine['gpu'] or 'none'}\n"
          f"estimated fp32 peak of {args.peak['cores']} cores (an estimate: cores x GHz x FLOPs/cycle from the ISA): {peak}",
          flush=True)
    once = set()  # scoring and start-up do not depend on the model: measured once
    for config in configs:
        for section in sections:
            if section not in CONFIG_SECTIONS[config] or section in once:
                continue
            once |= {section} & {"metrics", "startup"}
            print(f"[{config} / {section}]", flush=True)
            if THREADS is not None:  # the sections before ran in child processes: their load is not this one's
                THREADS.restart()
            results.setdefault(config, {})[section] = SECTIONS[section](config, args)
    if "peer" in results:
        peer_table(results["peer"])
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
