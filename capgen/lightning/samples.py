"""Caption samples (drawn for capgen.lightning.callbacks.CaptionSamples): generated vs reference
captions as a table, each image with its caption and, for attention models, per-word
attention figures, logged to every logger that shows them. Each figure is drawn once and
its pixels handed to every such logger:

    TensorBoard   IMAGES <stage>_samples/<k>, <stage>_attention/<k>; TEXT <stage>/captions
    MLflow        artifacts <stage>_samples/step<N>/<k>.png, <stage>_attention/..., <stage>_captions/step<N>.md
    W&B           images under the same keys as TensorBoard, the table as <stage>/captions

The CSV logger shows neither; with no logger that does, no caption is generated.
"""

from __future__ import annotations

import html
from collections.abc import Callable

import lightning as L
import matplotlib.pyplot as plt
import numpy as np
import torch
from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger

from ..data.datamodule import Batch
from ..models.search import first_captions
from ..viz import attention_figure, caption_figure
from ..vocab import shown
from . import compat

# One row per image: (image id, generated caption, reference captions).
Row = tuple[int, str, list[str]]


def log_samples(trainer: L.Trainer, module, batch: Batch, stage: str,
                pictures: Callable[[str, list[int]], list[np.ndarray]] | None) -> None:
    """Log the batch's captions and figures (see the module docstring) at the step Lightning logs
    the split's scores at (compat.logged_step), so that each validation's figures sit with its
    val/* points. Not trainer.global_step, which at an epoch's validation is already one more:
    a resume tells TensorBoard to drop whatever was logged at or after its checkpoint's
    global_step (loggers.resume_kwargs), and that would drop the figures of the validation the
    checkpoint was written after, which the resumed run does not log again."""
    writers = [(logger, WRITERS[kind]) for logger in trainer.loggers for kind in WRITERS if isinstance(logger, kind)]
    if not writers:
        return
    result = first_captions(module.generate(batch.images))  # each image's first (best) caption
    references = module.scores(stage).references
    if batch.images.dtype == torch.uint8:  # (B, 3, H, W) pixels
        images = list(batch.images.permute(0, 2, 3, 1).cpu().numpy())
    elif pictures is not None:  # cached features (B, P, D): the pixels come from the data set
        images = pictures(stage, batch.image_ids.tolist())
    else:
        raise ValueError("CaptionSamples: the batches carry features, and no pictures(split, image_ids) was given")
    rows: list[Row] = []
    figures: dict[str, np.ndarray] = {}  # tag -> (H, W, 3) uint8
    for k, image_id in enumerate(batch.image_ids.tolist()):
        words = module.vocab.decode_words(result.tokens[k].tolist())
        caption = shown(" ".join(words), module.vocab.is_cut(result.tokens[k].tolist()))
        rows.append((image_id, caption, list(references.get(image_id, []))))
        figures[f"{stage}_samples/{k}"] = pixels(caption_figure(images[k], f"image {image_id}", caption))
        if result.alphas is not None and words:
            # alphas row k: one map per emitted token; keep the words' maps (and <end>'s).
            figures[f"{stage}_attention/{k}"] = pixels(attention_figure(images[k], words + ["<end>"], result.alphas[k],
                                                                        module.net.grid))
    step = compat.logged_step(trainer)
    for logger, write in writers:
        write(logger, stage, step, rows, figures)


def pixels(fig) -> np.ndarray:
    """A figure drawn once, as (H, W, 3) uint8 (as TensorBoard's add_figure renders it); closed."""
    fig.canvas.draw()  # the Agg canvas (capgen.viz selects the backend)
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return image


def markdown_table(rows: list[Row]) -> str:
    lines = ["| image | generated | references |", "|---|---|---|"]
    for image_id, caption, refs in rows:
        lines.append(f"| {image_id} | **{html.escape(caption)}** | {'<br>'.join(html.escape(r) for r in refs)} |")
    return "\n".join(lines)


def _tensorboard(logger: TensorBoardLogger, stage: str, step: int, rows: list[Row], figures: dict[str, np.ndarray]) -> None:
    tb = logger.experiment
    for tag, image in figures.items():
        tb.add_image(tag, image, global_step=step, dataformats="HWC")
    tb.add_text(f"{stage}/captions", markdown_table(rows), global_step=step)


def _mlflow(logger: MLFlowLogger, stage: str, step: int, rows: list[Row], figures: dict[str, np.ndarray]) -> None:
    client, run_id = logger.experiment, logger.run_id
    for tag, image in figures.items():
        group, k = tag.split("/")
        client.log_image(run_id, image, artifact_file=f"{group}/step{step:06d}/{k}.png")
    client.log_text(run_id, markdown_table(rows), artifact_file=f"{stage}_captions/step{step:06d}.md")


def _wandb(logger: WandbLogger, stage: str, step: int, rows: list[Row], figures: dict[str, np.ndarray]) -> None:
    import wandb

    table = wandb.Table(columns=["image", "generated", "references"],
                        data=[[image_id, caption, " | ".join(refs)] for image_id, caption, refs in rows])
    media = {tag: wandb.Image(image) for tag, image in figures.items()}
    # One call, on the x-axis of the scalars (Lightning's WandbLogger plots against trainer/global_step).
    logger.experiment.log({**media, f"{stage}/captions": table, "trainer/global_step": step})


# The loggers that show samples (Lightning's classes, so capgen's subclasses are included).
WRITERS: dict[type[Logger], Callable[..., None]] = {TensorBoardLogger: _tensorboard, MLFlowLogger: _mlflow,
                                                    WandbLogger: _wandb}
