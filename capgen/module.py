"""The LightningModule: losses, decoding for validation/test, metrics, logging, optimizers.

It receives its network already built (a Captioner) and the vocabulary; the network's
Hydra config travels in the hyper-parameters and the vocabulary in every checkpoint, so
`CaptioningModule.from_checkpoint(path)` needs nothing else.
"""

from __future__ import annotations

import math
import shutil
from typing import Any, Literal

import hydra
import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from .checkpointing import check_format, stamp
from .data.datamodule import Batch
from .grounding import GroundingScores, caption_counts, caption_words, scene_index
from .loss_metric import ImageMeanLoss
from .metrics import CaptionScores
from .models.captioner import Captioner
from .vocab import Vocabulary


def caption_loss(logits: torch.Tensor, targets: torch.Tensor, pad_id: int = 0) -> torch.Tensor:
    """Mean cross-entropy over real tokens: logits (B, T, V), targets (B, T); padding ignored."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=pad_id)


def doubly_stochastic(alphas: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum_p (1 - sum_t alpha_tp)^2, averaged over the batch: alphas (B, T, P), mask (B, T).

    Pushes the model to look at every cell about once over the caption (Xu et al. eq. 14).
    """
    coverage = (alphas.float() * mask.unsqueeze(-1)).sum(dim=1)  # (B, P)
    return ((1.0 - coverage) ** 2).sum(dim=1).mean()


class CaptioningModule(L.LightningModule):
    def __init__(
        self,
        net: Captioner,
        vocab: Vocabulary,
        net_config: dict | None = None,
        lr: float = 1e-3,
        encoder_lr: float | None = None,
        weight_decay: float = 0.0,
        scheduler: Literal["none", "cosine"] = "none",
        warmup_steps: int = 0,
        alpha_c: float = 1.0,
        beam_size: int = 1,
        test_beam_size: int = 3,
        length_penalty: float = 0.0,
        max_decode_len: int | None = None,
        num_log_samples: int = 4,
        val_metrics: tuple[str, ...] = ("BLEU", "CIDEr"),
        test_metrics: tuple[str, ...] | None = None,
        tokenizer: str = "python",
    ):
        """val_metrics are computed every epoch, so they are the cheap ones; test_metrics
        default to BLEU, ROUGE-L, CIDEr, SPICE (skipped with a warning without its models)
        and METEOR when `java` is on PATH (its JVM starts once per process). tokenizer:
        "python" (capgen's, token for token equal to the official one on real captions and
        no JVM start per evaluation), "java" (the official PTBTokenizer) or "auto"."""
        super().__init__()
        if scheduler not in ("none", "cosine"):
            raise ValueError(f"module.scheduler={scheduler!r}: use none or cosine")
        for name, k in (("beam_size", beam_size), ("test_beam_size", test_beam_size)):
            if k < 1:  # fail at start-up, not at the first validation
                raise ValueError(f"model.module.{name}={k}: a beam holds at least 1 caption")
        # Plain data only, so checkpoints load with weights_only (Hydra passes ListConfig/DictConfig).
        if isinstance(net_config, DictConfig):
            net_config = OmegaConf.to_container(net_config, resolve=True)
        val_metrics = tuple(val_metrics)
        test_metrics = tuple(test_metrics) if test_metrics is not None else None
        # net and vocab are live objects: the checkpoint keeps net_config and the vocabulary instead.
        self.save_hyperparameters(ignore=["net", "vocab"])
        self.net, self.vocab = net, vocab
        if test_metrics is None:
            java = shutil.which("java") is not None
            test_metrics = ("BLEU", "METEOR", "ROUGE-L", "CIDEr", "SPICE") if java else ("BLEU", "ROUGE-L", "CIDEr", "SPICE")
        self.val_scores = CaptionScores(vocab, metrics=tuple(val_metrics), tokenizer=tokenizer)
        self.test_scores = CaptionScores(vocab, metrics=tuple(test_metrics), tokenizer=tokenizer)
        # test/grounding for attention models on data with known object boxes (shapes)
        self.test_grounding = GroundingScores()
        self._scenes = None  # (source with scene(i), {image id: index}) of the test split
        self.eval_loss = torch.nn.ModuleDict({"val": ImageMeanLoss(), "test": ImageMeanLoss()})
        self._samples: dict[str, Batch] = {}

    # ----- building from a checkpoint -------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["vocab"] = self.vocab.to_dict()
        stamp(checkpoint)  # format and capgen version, checked when the file is read back

    @classmethod
    def from_checkpoint(cls, path: str, map_location: str | torch.device = "cpu") -> "CaptioningModule":
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
        for key in ("vocab", "hyper_parameters", "state_dict"):
            if key not in ckpt:
                raise ValueError(f"{path}: not a capgen checkpoint (no '{key}' entry)")
        check_format(ckpt, path)
        hp = dict(ckpt["hyper_parameters"])
        if hp.get("net_config") is None:
            raise ValueError(f"{path}: the checkpoint has no net_config; it was not written by capgen-train")
        vocab = Vocabulary.from_dict(ckpt["vocab"])
        net = build_net(hp["net_config"], vocab)
        module = cls(net=net, vocab=vocab, **hp)
        module.load_state_dict(ckpt["state_dict"])
        return module

    # ----- training ---------------------------------------------------------------------
    def _loss(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = batch.captions[:, :-1], batch.captions[:, 1:]  # (B, T-1) each
        logits, alphas = self.net(batch.images, inputs)
        xent = caption_loss(logits, targets, self.vocab.pad_id)
        if alphas is None or self.hparams.alpha_c == 0:
            return xent, xent
        reg = doubly_stochastic(alphas, targets != self.vocab.pad_id)
        return xent + self.hparams.alpha_c * reg, xent

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        loss, xent = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch.images))
        self.log("train/xent", xent, batch_size=len(batch.images))
        return loss

    # ----- validation / test ------------------------------------------------------------
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None:
            return
        if stage in ("fit", "validate"):
            self.val_scores.set_references(dm.references("val"))
        if stage == "test":
            self.test_scores.set_references(dm.references("test"))
            self._scenes = scene_index(dm, "test") if self.net.has_attention else None

    def generate(self, images: torch.Tensor, beam_size: int | None = None):
        """Captions for a batch; validation decodes with `beam_size` (greedy by default, cheap
        every epoch), test with `test_beam_size`, unless a beam size is given."""
        if beam_size is None:
            testing = self._trainer is not None and self.trainer.testing
            beam_size = self.hparams.test_beam_size if testing else self.hparams.beam_size
        max_len = self.hparams.max_decode_len or self.vocab.max_len
        return self.net.generate(
            images, max_len, self.vocab.start_id, self.vocab.end_id, beam_size, self.hparams.length_penalty
        )

    def _eval_step(self, batch: Batch, batch_idx: int, stage: str) -> None:
        inputs, targets = batch.captions[:, :-1], batch.captions[:, 1:]  # (B, T-1) each
        logits, _ = self.net(batch.images, inputs)
        pad = self.vocab.pad_id
        per_token = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=pad, reduction="none")
        # Per image, so DDP's repeated images count once (capgen.loss_metric).
        self.eval_loss[stage].update(batch.image_ids, per_token.view_as(targets).sum(1), (targets != pad).sum(1))
        result = self.generate(batch.images)
        (self.val_scores if stage == "val" else self.test_scores).update(batch.image_ids, result.tokens)
        if stage == "test" and self._scenes is not None:
            self._update_grounding(batch.image_ids, result)
        if batch_idx == 0:  # the same first images every epoch: compare runs image by image
            n = self.hparams.num_log_samples
            self._samples[stage] = Batch(*(x[:n] for x in batch))

    def _update_grounding(self, image_ids: torch.Tensor, result) -> None:
        source, index = self._scenes
        counts = []
        for k, image_id in enumerate(image_ids.tolist()):
            if image_id not in index:
                raise KeyError(f"test image id {image_id} is not in the test source's scenes")
            words = caption_words(result.tokens[k].tolist(), self.vocab.itos, self.vocab.end_id)
            scene = source.scene(index[image_id])
            counts.append(caption_counts(result.alphas[k, : len(words)], words, scene, self.net.grid, source.image_size))
        self.test_grounding.update(image_ids, torch.from_numpy(np.stack(counts)).to(image_ids.device))

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test")

    def _eval_epoch_end(self, stage: str) -> None:
        metric = self.val_scores if stage == "val" else self.test_scores
        loss = self.eval_loss[stage]
        if self.trainer.sanity_checking:
            metric.reset()
            loss.reset()
            return
        scores = {**metric.compute(), "loss": loss.compute()}
        loss.reset()
        # compute() already gathered every rank's captions, so each rank holds the same scores;
        # sync_dist averages identical values (exact), and keeps Lightning from warning.
        self.log_dict({f"{stage}/{k}": v for k, v in scores.items()}, sync_dist=True)
        refs = metric.references
        metric.reset()
        if stage == "test" and self._scenes is not None:
            g = self.test_grounding.compute()  # gathered from every rank, like the scores
            self.test_grounding.reset()
            # grounding: attention peaks on the named object; chance: a uniform peak; other:
            # the same peaks against the scene's other objects (see capgen.grounding)
            values = {"grounding": g.score, "grounding_chance": g.chance, "grounding_other": g.other}
            self.log_dict({f"test/{k}": v for k, v in values.items() if not math.isnan(v)}, sync_dist=True)
        if stage in self._samples and self.trainer.is_global_zero:
            from .logging_tb import log_samples  # matplotlib only where figures are drawn

            log_samples(self, self._samples.pop(stage), refs, stage)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    # ----- optimisation -----------------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        groups = [
            {"params": [p for p in self.net.decoder.parameters() if p.requires_grad], "lr": hp.lr},
            {"params": [p for p in self.net.encoder.parameters() if p.requires_grad], "lr": hp.encoder_lr or hp.lr},
        ]
        groups = [g for g in groups if g["params"]]
        optimizer = torch.optim.AdamW(groups, weight_decay=hp.weight_decay)
        if hp.scheduler == "none":
            return optimizer
        total = self.trainer.estimated_stepping_batches
        warmup = min(hp.warmup_steps, max(total - 1, 0))

        def factor(step: int) -> float:  # linear warm-up, then cosine to zero
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(total - warmup, 1)
            return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def build_net(net_config: dict | DictConfig, vocab: Vocabulary) -> Captioner:
    """Build the Captioner from a model config's `encoder` and `decoder` nodes."""
    cfg = net_config if isinstance(net_config, DictConfig) else OmegaConf.create(net_config)
    return Captioner(
        encoder=hydra.utils.instantiate(cfg.encoder), decoder=hydra.utils.instantiate(cfg.decoder), vocab_size=len(vocab)
    )
