"""Speed of the default shapes configuration: training step, greedy decoding, data loading.

    python scripts/benchmark.py [--batch-size 64] [--repeats 7] [--out benchmark.json]

Prints a table and writes the numbers as JSON. Every timing is the median of `--repeats`
runs after one warm-up run. (The performance issue extends this to the reference
Show-Attend-Tell configuration and GPUs.)

Data loading: images/s of a training epoch through the DataLoader (batch 64, 0 and 1 workers)
from the raw shapes source (generating an image stands in for decoding one), from the image
cache and from the feature cache (the default small CNN's features) that capgen-prepare
writes; and, where capgen.data.images.load_rgb exists, decoding + resizing 640x480 JPEGs to 256.
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
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
