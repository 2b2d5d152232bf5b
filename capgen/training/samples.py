"""TensorBoard samples: generated vs reference captions and, for attention models, figures
(drawn for capgen.training.callbacks.CaptionSamples)."""

from __future__ import annotations

import html
from collections.abc import Callable

import lightning as L
import matplotlib.pyplot as plt
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from ..data.datamodule import Batch
from ..models.decoding import first_captions
from ..viz import attention_figure, caption_figure


def log_samples(trainer: L.Trainer, module, batch: Batch, stage: str,
                pictures: Callable[[str, list[int]], list[np.ndarray]] | None) -> None:
    """Log the batch's captions (a Markdown table), each image with its caption and, for
    attention models, per-word attention figures, to the first TensorBoard logger."""
    loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
    if not loggers:
        return
    tb = loggers[0].experiment
    result = first_captions(module.generate(batch.images))  # each image's first (best) caption
    references = module.scores(stage).references
    step = trainer.global_step
    if batch.images.dtype == torch.uint8:  # (B, 3, H, W) pixels
        images = list(batch.images.permute(0, 2, 3, 1).cpu().numpy())
    elif pictures is not None:  # cached features (B, P, D): the pixels come from the data set
        images = pictures(stage, batch.image_ids.tolist())
    else:
        raise ValueError("CaptionSamples: the batches carry features, and no pictures(split, image_ids) was given")
    rows = ["| image | generated | references |", "|---|---|---|"]
    for k, image_id in enumerate(batch.image_ids.tolist()):
        words = module.vocab.decode_words(result.tokens[k].tolist())
        refs = "<br>".join(html.escape(r) for r in references.get(image_id, []))
        rows.append(f"| {image_id} | **{html.escape(' '.join(words))}** | {refs} |")
        fig = caption_figure(images[k], f"image {image_id}", " ".join(words))
        tb.add_figure(f"{stage}_samples/{k}", fig, global_step=step)
        plt.close(fig)
        if result.alphas is not None and words:
            # alphas row k: one map per emitted token; keep the words' maps (and <end>'s).
            fig = attention_figure(images[k], words + ["<end>"], result.alphas[k], module.net.grid)
            tb.add_figure(f"{stage}_attention/{k}", fig, global_step=step)
            plt.close(fig)
    tb.add_text(f"{stage}/captions", "\n".join(rows), global_step=step)
