"""Speed of the default shapes configuration: training step, greedy decoding, data loading.

    python scripts/benchmark.py [--batch-size 64] [--repeats 7] [--out benchmark.json]

Prints a table and writes the numbers as JSON. Every timing is the median of `--repeats`
runs after one warm-up run. (The performance issue extends this to the reference
Show-Attend-Tell configuration, GPUs and the caches.)
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
from hydra import compose, initialize_config_dir

from capgen.cli.train import CONF_DIR
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

    print(f"batch {B}, {results['threads']} threads, torch {results['torch']}")
    print(f"{'model':6} {'train step s':>13} {'train img/s':>12} {'greedy cap/s':>13}")
    for model, r in results["models"].items():
        print(f"{model:6} {r['train_step_s']:13.3f} {r['train_images_per_s']:12.1f} {r['greedy_captions_per_s']:13.1f}")
    print(f"shapes generator: {results['shapes_images_per_s']:.0f} images/s (one process)")
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
