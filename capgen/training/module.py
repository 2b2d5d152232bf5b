"""The LightningModule: losses, decoding for validation/test, metrics, optimizers.

It receives its network already built (a Captioner) and the vocabulary, and from whoever
runs it (capgen.training.train, capgen-eval) the references of the splits it scores and, for
the grounding score, the test split's scenes: it never reads the datamodule. The network's
Hydra config travels in the hyper-parameters and the vocabulary in every checkpoint, so
`CaptioningModule.from_checkpoint(path)` needs nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from ..data.datamodule import Batch
from ..metrics import CaptionScores, GroundingScores, ImageMeanLoss, Scenes, default_metrics
from ..metrics.captions import METRICS
from ..models.captioner import Captioner, build_captioner
from ..models.losses import caption_loss, doubly_stochastic, token_losses
from ..models.scheduled_sampling import sampled_forward, sampling_probability
from ..models.word_vectors import load_word_vectors
from ..vocab import Vocabulary
from . import compat
from .checkpoint import read_checkpoint, stamp
from .recipes import check_recipe, lr_scheduler


def check_optimisation(lr: float, encoder_lr: float | None, weight_decay: float, warmup_steps: int, alpha_c: float) -> None:
    """The optimisation settings are in range (their types are checked against the annotations
    at start-up: capgen.training.settings)."""
    rules = (("lr", lr, lr > 0 and math.isfinite(lr), "a positive number, e.g. 2e-3"),
             ("encoder_lr", encoder_lr, encoder_lr is None or (encoder_lr > 0 and math.isfinite(encoder_lr)),
              "a positive number, or null for model.module.lr"),
             ("weight_decay", weight_decay, weight_decay >= 0 and math.isfinite(weight_decay), "at least 0, e.g. 0.0"),
             ("warmup_steps", warmup_steps, warmup_steps >= 0, "at least 0 (0: no warm-up)"),
             ("alpha_c", alpha_c, alpha_c >= 0 and math.isfinite(alpha_c), "at least 0 (0: no attention regularisation)"))
    for name, value, ok, fix in rules:
        if not ok:
            raise ValueError(f"model.module.{name}={value}: must be {fix}")


class CaptioningModule(L.LightningModule):
    def __init__(
        self,
        net: Captioner,
        vocab: Vocabulary,
        net_config: dict | None = None,
        lr: float = 2e-3,
        encoder_lr: float | None = None,
        weight_decay: float = 0.0,
        scheduler: Literal["none", "cosine", "step", "plateau"] = "cosine",
        warmup_steps: int = 100,
        alpha_c: float = 1.0,
        beam_size: int = 1,
        test_beam_size: int = 3,
        length_penalty: float = 0.0,
        max_decode_len: int | None = None,
        val_metrics: Sequence[str] = ("BLEU", "CIDEr"),
        test_metrics: Sequence[str] | None = None,
        tokenizer: str = "python",
        lr_decay: float = 0.1,
        lr_step_epochs: int = 10,
        lr_patience: int = 2,
        monitor: str = "val/CIDEr",
        monitor_mode: Literal["max", "min"] = "max",
        label_smoothing: float = 0.0,
        scheduled_sampling: float = 0.0,
        scheduled_sampling_start: int = 0,
        scheduled_sampling_ramp: int = 1,
        word_vectors: str | None = None,
        freeze_word_vectors: bool = False,
    ):
        """val_metrics are computed every epoch, so they are the cheap ones; test_metrics
        default to every score that can run here (capgen.metrics.default_metrics). tokenizer:
        "python" (capgen's, token for token equal to the official one on real captions and
        no JVM start per evaluation), "java" (the official PTBTokenizer) or "auto".

        Recipe options (defaults: off): scheduler step/plateau with lr_decay, lr_step_epochs,
        lr_patience and the run's monitor/monitor_mode (capgen.training.recipes);
        label_smoothing of the training cross-entropy (val/loss stays the plain one);
        scheduled_sampling, the highest probability of feeding the model's own previous word,
        reached linearly over scheduled_sampling_ramp epochs from epoch scheduled_sampling_start
        (capgen.models.scheduled_sampling); word_vectors, a GloVe-format file for the decoder's
        word embedding, frozen or fine-tuned (capgen.models.word_vectors)."""
        super().__init__()
        check_optimisation(lr, encoder_lr, weight_decay, warmup_steps, alpha_c)
        check_recipe(scheduler, lr_decay, lr_step_epochs, lr_patience, monitor_mode, label_smoothing, scheduled_sampling,
                     scheduled_sampling_start, scheduled_sampling_ramp)
        for name, chosen in (("val_metrics", val_metrics), ("test_metrics", test_metrics or ())):
            unknown = [m for m in chosen if m not in METRICS]
            if unknown:
                raise ValueError(f"model.module.{name}={list(chosen)}: unknown metric(s) {unknown}; choose from {list(METRICS)}")
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
        self.val_scores = CaptionScores(vocab, metrics=val_metrics, tokenizer=tokenizer)
        self.test_scores = CaptionScores(vocab, metrics=test_metrics or default_metrics(), tokenizer=tokenizer)
        self.eval_loss = torch.nn.ModuleDict({"val": ImageMeanLoss(), "test": ImageMeanLoss()})
        # test/grounding: attention models on data with known object boxes (shapes), see set_scenes
        self.test_grounding = GroundingScores()
        self.scenes: Scenes | None = None
        self.test_beam_size = test_beam_size
        # What the last test decoded and scored (each image's caption with its BLEU-4 and CIDEr),
        # for capgen-eval's files and the run's test_captions.jsonl (every rank holds it all).
        self.last_test: dict[str, Any] = {}

    # ----- what the module is given -----------------------------------------------------
    def set_references(self, stage: Literal["val", "test"], references: Mapping[int, Sequence[str]]) -> None:
        """The reference captions of the split that `stage` scores (image id -> captions)."""
        self.scores(stage).set_references(references)

    def set_scenes(self, scenes: Scenes | None) -> None:
        """The test split's scenes, for test/grounding (attention models only; None: no score)."""
        self.scenes = scenes if self.net.has_attention else None

    def configure_test(self, beam_size: int | None = None, metrics: Sequence[str] | None = None) -> None:
        """Decoding and scores of the next test, where they differ from the hyper-parameters."""
        if beam_size is not None:
            if beam_size < 1:
                raise ValueError(f"beam_size={beam_size}: a beam holds at least 1 caption")
            self.test_beam_size = beam_size
        if metrics is not None:
            references = self.test_scores.references
            self.test_scores = CaptionScores(self.vocab, references, metrics=tuple(metrics), tokenizer=self.hparams.tokenizer)

    def scores(self, stage: str) -> CaptionScores:
        return self.val_scores if stage == "val" else self.test_scores

    # ----- checkpoints ------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["vocab"] = self.vocab.to_dict()
        stamp(checkpoint)  # format and capgen version, checked when the file is read back

    @classmethod
    def from_checkpoint(cls, path: str, setting: str = "ckpt_path") -> CaptioningModule:
        """The module a capgen checkpoint holds, on the CPU (capgen.training.checkpoint says
        what is checked; errors name `setting`=path)."""
        ckpt = read_checkpoint(path, setting)
        module = cls(net=build_captioner(ckpt.net_config, len(ckpt.vocab)), vocab=ckpt.vocab, **ckpt.hparams)
        try:
            module.load_state_dict(ckpt.state_dict)
        except RuntimeError as e:  # read fine, but the weights do not fit
            detail = " ".join(str(e).split())  # torch lists each mismatch on its own line
            raise ValueError(f"{setting}={path}: its weights do not fit the network its net_config builds ({detail})") from None
        return module

    # ----- training ---------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        # Before a resumed run's checkpoint is restored (it then overwrites the vectors) and
        # before the optimizer is made (which leaves out a frozen table).
        if stage == "fit" and self.hparams.word_vectors:
            load_word_vectors(self.net.decoder.embed, self.hparams.word_vectors, self.vocab,
                              self.hparams.freeze_word_vectors)

    def sampling_probability(self) -> float:
        """Scheduled sampling's probability in the current epoch (0: teacher forcing)."""
        hp = self.hparams
        return sampling_probability(self.current_epoch, hp.scheduled_sampling, hp.scheduled_sampling_start,
                                    hp.scheduled_sampling_ramp)

    def _loss(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = batch.captions[:, :-1], batch.captions[:, 1:]  # (B, T-1) each
        p = self.sampling_probability() if self.training else 0.0
        if p > 0:
            logits, alphas = sampled_forward(self.net, batch.images, inputs, p, self.vocab.start_id)
            if compat.attached_trainer(self) is not None:
                self.log("train/sampling_prob", p, batch_size=len(batch.images))
        else:
            logits, alphas = self.net(batch.images, inputs)  # teacher forcing, the decoders' fast path
        xent = caption_loss(logits, targets, self.vocab.pad_id, self.hparams.label_smoothing)
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
    def generate(self, images: torch.Tensor, beam_size: int | None = None):
        """Captions for a batch; validation decodes with `beam_size` (greedy by default, cheap
        every epoch), test with `test_beam_size`, unless a beam size is given."""
        if beam_size is None:
            trainer = compat.attached_trainer(self)
            beam_size = self.test_beam_size if trainer is not None and trainer.testing else self.hparams.beam_size
        max_len = self.hparams.max_decode_len or self.vocab.max_len
        return self.net.generate(
            images, max_len, self.vocab.start_id, self.vocab.end_id, beam_size, self.hparams.length_penalty
        )

    def _eval_step(self, batch: Batch, stage: str) -> None:
        inputs, targets = batch.captions[:, :-1], batch.captions[:, 1:]  # (B, T-1) each
        logits, _ = self.net(batch.images, inputs)
        pad = self.vocab.pad_id
        # Per image, so DDP's repeated images count once (capgen.metrics.per_image).
        self.eval_loss[stage].update(batch.image_ids, token_losses(logits, targets, pad).sum(1), (targets != pad).sum(1))
        result = self.generate(batch.images)
        self.scores(stage).update(batch.image_ids, result.tokens, result.logprob)
        if stage == "test" and self.scenes is not None:
            self.test_grounding.add_captions(batch.image_ids, result.tokens, result.alphas, self.scenes,
                                             self.vocab.itos, self.vocab.end_id, self.net.grid)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _eval_epoch_end(self, stage: str) -> None:
        metric, loss = self.scores(stage), self.eval_loss[stage]
        if self.trainer.sanity_checking:
            metric.reset()
            loss.reset()
            return
        scores = {**metric.compute(), "loss": loss.compute()}
        loss.reset()
        # compute() already gathered every rank's captions, so each rank holds the same scores;
        # sync_dist averages identical values (exact), and keeps Lightning from warning.
        self.log_dict({f"{stage}/{k}": v for k, v in scores.items()}, sync_dist=True)
        if stage == "test":
            self.last_test = {"captions": metric.scored_captions, "grounding": None}
        metric.reset()
        if stage == "test" and self.scenes is not None:
            g = self.test_grounding.compute()  # gathered from every rank, like the scores
            self.test_grounding.reset()
            self.last_test["grounding"] = g
            # grounding: attention peaks on the named object; chance: a uniform peak; other:
            # the same peaks against the scene's other objects (see capgen.metrics.grounding)
            values = {"grounding": g.score, "grounding_chance": g.chance, "grounding_other": g.other}
            self.log_dict({f"test/{k}": v for k, v in values.items() if not math.isnan(v)}, sync_dist=True)

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
        total = self.trainer.estimated_stepping_batches if hp.scheduler == "cosine" else None
        scheduler = lr_scheduler(optimizer, hp, total)
        return optimizer if scheduler is None else {"optimizer": optimizer, "lr_scheduler": scheduler}
