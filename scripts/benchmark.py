"""Speed of the default shapes configuration: training step, greedy decoding, data loading.

    python scripts/benchmark.py [--batch-size 64] [--repeats 7] [--out benchmark.json]

Prints a table and writes the numbers as JSON. Every timing is the median of `--repeats`
runs after one warm-up run. (The performance issue extends this to the reference
Show-Attend-Tell configuration and GPUs.)

Data loading: images/s of a training epoch through the DataLoader (batch 64, 0 and 1 workers)
from the raw shapes source (generating an image stands in for decoding one), from the image
cache and from the feature cache (the default small CNN's features) that capgen-prepare
writes; and, where capgen.data.images.load_rgb exists, decoding + resizing 640x480 JPEGs to 256.

Caption decoding: captions/s of greedy, beam 3 and beam 5 with the attention model (trained
100 steps so that it ends captions), the batch decoded at once vs one image at a time.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from capgen.cli.train import CONF_DIR
from capgen.data import CaptionDataModule
from capgen.data.cache import describe_source, write_feature_cache, write_image_cache
from capgen.data.shapes import ShapesSource
from capgen.module import build_net
from capgen.vocab import Vocabulary


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def data_loading(batch_size: int, repeats: int, n_images: int = 1024) -> dict:
    """images/s of one training epoch per (data form, DataLoader workers), and JPEG decoding."""
    factory = functools.partial(ShapesSource, sizes={"train": n_images})
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        encoder_config = compose("train").model.encoder
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        source = factory(split="train")
        write_image_cache(source, tmp, "train", describe_source(factory, "train", source))
        torch.manual_seed(0)
        write_feature_cache(tmp, "train", hydra.utils.instantiate(encoder_config), encoder_config)
        forms = {"raw": {}, "image_cache": {"cache_dir": tmp},
                 "feature_cache": {"cache_dir": tmp, "use_features": True, "encoder": encoder_config}}
        for form, kw in forms.items():
            for workers in (0, 1):
                dm = CaptionDataModule(source=factory, batch_size=batch_size, num_workers=workers, max_len=24, **kw)
                loader = dm.train_dataloader()  # persistent workers: started once, in the warm-up epoch
                epoch = median_seconds(lambda: sum(len(b.images) for b in loader), repeats)
                results[f"{form}_workers{workers}_images_per_s"] = len(loader) * batch_size / epoch

        try:
            from capgen.data.images import load_rgb
        except ImportError:
            print("note: capgen.data.images.load_rgb does not exist yet; JPEG decoding not measured")
            return results
        paths, scenes = [], ShapesSource("train", sizes={"train": 256}, image_size=480)
        for i in range(256):  # shapes scenes at 480x480 widened to 640: photo-like JPEG content
            image = scenes.image(i)
            paths.append(Path(tmp) / f"{i:03d}.jpg")
            Image.fromarray(np.concatenate([image, image[:, :160]], axis=1)).save(paths[-1], quality=90)
        decode = median_seconds(lambda: [load_rgb(p, 256) for p in paths], repeats)
        results["jpeg_640x480_decode_resize256_images_per_s"] = len(paths) / decode
    return results


def decoding_speed(src: ShapesSource, vocab: Vocabulary, repeats: int, n_images: int = 64, train_steps: int = 100) -> dict:
    """Captions/s of greedy, beam 3 and beam 5 with the default shapes attention model: the same
    `n_images` validation images decoded as one batch and one image at a time.

    Decoding only: the images are encoded once and generate() runs from the features. An
    untrained decoder hardly ever emits <end>, so every caption would run to max_len and one
    image at a time would do as many steps as the batch; `train_steps` Adam steps on `src`
    make the model end most captions, as a trained one does (ended_fraction says how many).
    """
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["model=attn"])
    torch.manual_seed(0)
    net = build_net({"encoder": cfg.model.encoder, "decoder": cfg.model.decoder}, vocab)
    n_train = min(len(src), 1024)
    images = torch.stack([torch.from_numpy(src.image(i)).permute(2, 0, 1) for i in range(n_train)])
    captions = torch.nn.utils.rnn.pad_sequence(
        [torch.tensor(vocab.encode(src.captions(i)[0])) for i in range(n_train)], batch_first=True
    )
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3)
    net.train()
    pick = torch.Generator().manual_seed(0)
    for _ in range(train_steps):
        idx = torch.randint(0, n_train, (64,), generator=pick)
        caps = captions[idx]
        caps = caps[:, : int((caps != 0).sum(1).max())]  # this batch's longest caption
        logits, _ = net(images[idx], caps[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), caps[:, 1:].flatten(), ignore_index=0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()

    val = ShapesSource("val", sizes={"val": n_images})
    with torch.no_grad():
        feats = net.encode(torch.stack([torch.from_numpy(val.image(i)).permute(2, 0, 1) for i in range(n_images)]))
    results = {"train_steps": train_steps, "images": n_images, "max_len": vocab.max_len}
    for name, beam in (("greedy", 1), ("beam3", 3), ("beam5", 5)):

        def generate(x, beam=beam):
            return net.generate(x, vocab.max_len, vocab.start_id, vocab.end_id, beam_size=beam)

        batched = median_seconds(lambda: generate(feats), repeats)
        one_by_one = median_seconds(lambda: [generate(feats[i : i + 1]) for i in range(n_images)], repeats)
        tokens = generate(feats).tokens
        ended = (tokens == vocab.end_id).any(1)
        results[name] = {
            "batched_captions_per_s": n_images / batched,
            "one_at_a_time_captions_per_s": n_images / one_by_one,
            "batched_speedup": one_by_one / batched,
            "ended_fraction": ended.float().mean().item(),
            "mean_caption_tokens": (tokens != 0).sum(1).float().mean().item(),
        }
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", default="benchmark.json")
    args = ap.parse_args()
    B = args.batch_size

    src = ShapesSource("train", sizes={"train": 2000})
    vocab = Vocabulary.build((c for i in range(len(src)) for c in src.captions(i)), max_len=24)
    images = torch.stack([torch.from_numpy(src.image(i)).permute(2, 0, 1) for i in range(B)])
    caps = [vocab.encode(src.captions(i)[0]) for i in range(B)]
    captions = torch.nn.utils.rnn.pad_sequence([torch.tensor(c) for c in caps], batch_first=True)

    results = {"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
               "torch": torch.__version__, "batch_size": B, "caption_tokens": captions.shape[1], "models": {}}
    for model in ("rnn", "lstm", "attn"):
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose("train", overrides=[f"model={model}"])
        torch.manual_seed(0)
        net = build_net({"encoder": cfg.model.encoder, "decoder": cfg.model.decoder}, vocab)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3)

        def train_step():
            logits, _ = net(images, captions[:, :-1])
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), captions[:, 1:].flatten(), ignore_index=0)
            opt.zero_grad()
            loss.backward()
            opt.step()

        def decode():
            net.generate(images, vocab.max_len, vocab.start_id, vocab.end_id)

        net.train()
        step = median_seconds(train_step, args.repeats)
        net.eval()
        dec = median_seconds(decode, args.repeats)
        results["models"][model] = {"train_step_s": step, "train_images_per_s": B / step, "greedy_captions_per_s": B / dec}

    load = median_seconds(lambda: [src.image(i) for i in range(B)], args.repeats)
    results["shapes_images_per_s"] = B / load
    results["data_loading"] = data_loading(B, args.repeats)
    decode_repeats = min(args.repeats, 3)  # one image at a time is slow: a few runs
    results["decoding"] = decoding_speed(src, vocab, decode_repeats, n_images=B)

    print(f"batch {B}, {results['threads']} threads, torch {results['torch']}")
    print(f"{'model':6} {'train step s':>13} {'train img/s':>12} {'greedy cap/s':>13}")
    for model, r in results["models"].items():
        print(f"{model:6} {r['train_step_s']:13.3f} {r['train_images_per_s']:12.1f} {r['greedy_captions_per_s']:13.1f}")
    print(f"shapes generator: {results['shapes_images_per_s']:.0f} images/s (one process)")
    loading = results["data_loading"]
    print(f"\ndata loading, training epoch through the DataLoader, batch {B} (images/s)")
    print(f"{'from':14} {'0 workers':>10} {'1 worker':>10}")
    for form in ("raw", "image_cache", "feature_cache"):
        print(f"{form:14} {loading[form + '_workers0_images_per_s']:10.0f} {loading[form + '_workers1_images_per_s']:10.0f}")
    if "jpeg_640x480_decode_resize256_images_per_s" in loading:
        print(f"JPEG 640x480 decode + resize to 256 (load_rgb, one process): "
              f"{loading['jpeg_640x480_decode_resize256_images_per_s']:.0f} images/s")
    dec = results["decoding"]
    print(f"\ndecoding, attention model after {dec['train_steps']} training steps, {dec['images']} shapes val images, "
          f"from features (captions/s, median of {decode_repeats} runs)")
    print(f"{'':8} {'batched':>9} {'one by one':>11} {'speed-up':>9} {'ended':>6} {'tokens':>7}")
    for name in ("greedy", "beam3", "beam5"):
        r = dec[name]
        print(f"{name:8} {r['batched_captions_per_s']:9.1f} {r['one_at_a_time_captions_per_s']:11.1f} "
              f"{r['batched_speedup']:8.1f}x {r['ended_fraction']:6.0%} {r['mean_caption_tokens']:7.1f}")
    print("(ended: captions that emitted <end>; the others ran to the length limit, max_len + 1 tokens)")
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
