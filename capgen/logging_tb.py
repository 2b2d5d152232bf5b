"""TensorBoard samples: generated vs reference captions and, for attention models, figures."""

from __future__ import annotations

import html

import lightning as L
import matplotlib.pyplot as plt
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from .data.datamodule import Batch
from .viz import attention_figure, caption_figure


def log_samples(module: L.LightningModule, batch: Batch, references: dict[int, list[str]], stage: str) -> None:
    """Log the sample images' captions (a Markdown table), each image with its caption and, for
    attention models, per-word attention figures. The samples are the same images every epoch
    and in every run on the same data, so runs can be compared image by image."""
    loggers = [lg for lg in module.loggers if isinstance(lg, TensorBoardLogger)]
    if not loggers:
        return
    tb = loggers[0].experiment
    result = module.generate(batch.images)
    step = module.global_step
    if batch.images.dtype == torch.uint8:  # (B, 3, H, W) pixels
        pictures = list(batch.images.permute(0, 2, 3, 1).cpu().numpy())
    else:  # cached features (B, P, D): the pixels come from the data set
        pictures = module.trainer.datamodule.pictures(stage, batch.image_ids.tolist())
    rows = ["| image | generated | references |", "|---|---|---|"]
    for k, image_id in enumerate(batch.image_ids.tolist()):
        words = module.vocab.decode_words(result.tokens[k].tolist())
        refs = "<br>".join(html.escape(r) for r in references.get(image_id, []))
        rows.append(f"| {image_id} | **{html.escape(' '.join(words))}** | {refs} |")
        fig = caption_figure(pictures[k], f"image {image_id}", " ".join(words))
        tb.add_figure(f"{stage}_samples/{k}", fig, global_step=step)
        plt.close(fig)
        if result.alphas is not None and words:
            image = pictures[k]
            # alphas row k: one map per emitted token; keep the words' maps (and <end>'s).
            fig = attention_figure(image, words + ["<end>"], result.alphas[k], module.net.grid)
            tb.add_figure(f"{stage}_attention/{k}", fig, global_step=step)
            plt.close(fig)
    tb.add_text(f"{stage}/captions", "\n".join(rows), global_step=step)
