"""The LightningModule: losses, decoding for validation/test, metrics, optimizers.

It receives its network already built (a Captioner) and the vocabulary, and from whoever
runs it (capgen.training.train, capgen-eval) the references of the splits it scores, for
self-critical training the training references, and, for the grounding score, the test
split's scenes: it never reads the datamodule. The network's
Hydra config travels in the hyper-parameters and the vocabulary in every checkpoint, so
`CaptioningModule.from_checkpoint(path)` needs nothing else.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from ..data.datamodule import Batch
from ..metrics import CaptionScores, GroundingScores, ImageMeanLoss, Scenes, default_metrics
from ..metrics.captions import METRICS
from ..metrics.cider_reward import CiderDReward
from ..metrics.per_image import PerImageMetric
from ..models import scst
from ..models.captioner import Captioner, build_captioner
from ..models.decoding import DecodeResult, DecodeSettings, NBestResult, first_captions
from ..models.losses import caption_loss, doubly_stochastic, token_losses
from ..models.scheduled_sampling import sampled_forward, sampling_probability
from ..models.word_vectors import load_word_vectors
from ..vocab import Vocabulary
from . import compat, provenance
from .checkpoint import read_checkpoint, stamp
from .recipes import check_recipe, lr_scheduler

# The default decoding: greedy every epoch (cheap), a beam of 3 for the test.
log = logging.getLogger(__name__)

VAL_DECODE = DecodeSettings()
TEST_DECODE = DecodeSettings(method="beam", beam_size=3)


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
        val_decode: Mapping[str, Any] | DecodeSettings = VAL_DECODE,
        test_decode: Mapping[str, Any] | DecodeSettings = TEST_DECODE,
        val_metrics: Sequence[str] = ("BLEU", "CIDEr"),
        test_metrics: Sequence[str] | None = None,
        tokenizer: str = "python",
        objective: Literal["xe", "scst"] = "xe",
        scst_samples: int = 5,
        scst_baseline: Literal["greedy", "mean"] = "mean",
        scst_max_len: int | None = None,
        scst_from_epoch: int = 0,
        scst_lr: float = 5e-5,
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
        """val_decode and test_decode: how validation (greedy by default, cheap every epoch)
        and the test (beam 3) decode, as DecodeSettings or their keys (missing ones at their
        defaults); with n_best > 1 the first caption of each image is scored. val_metrics are
        computed every epoch, so they are the cheap ones; test_metrics default to every score
        that can run here (capgen.metrics.default_metrics). tokenizer: "python" (capgen's,
        token for token equal to the official one on real captions and no JVM start per
        evaluation), "java" (the official PTBTokenizer) or "auto".

        objective: "xe" (cross-entropy) or "scst" (self-critical sequence training,
        capgen.models.scst): from epoch `scst_from_epoch` on (the epochs before it train with
        cross-entropy, so one run can chain both), each image gets `scst_samples` sampled
        captions of at most `scst_max_len` words (None: the vocabulary's max_len), rewarded
        with CIDEr-D against its training references, against the `scst_baseline` (mean:
        the image's other samples; greedy: its greedy caption). The SCST epochs run at the
        constant learning rate `scst_lr` (every parameter group's rate scaled by scst_lr / lr,
        so the encoder keeps its ratio); the epochs before them follow `scheduler` as a run
        of scst_from_epoch epochs would.

        Recipe options (defaults: off): scheduler step/plateau with lr_decay, lr_step_epochs,
        lr_patience and the run's monitor/monitor_mode (capgen.training.recipes);
        label_smoothing of the training cross-entropy (val/loss stays the plain one);
        scheduled_sampling, the highest probability of feeding the model's own previous word,
        reached linearly over scheduled_sampling_ramp epochs from epoch scheduled_sampling_start
        (capgen.models.scheduled_sampling); word_vectors, a GloVe-format file for the decoder's
        word embedding, frozen or fine-tuned (capgen.models.word_vectors)."""
        super().__init__()
        # {data, source} of the training data, set by capgen.training.train and saved in every
        # checkpoint; trained_on: what a checkpoint read back says (from_checkpoint).
        self.training_data: dict[str, str] | None = None
        self.trained_on: provenance.TrainedOn | None = None
        if objective not in ("xe", "scst"):
            raise ValueError(f"model.module.objective={objective!r}: use xe (cross-entropy) or scst (self-critical)")
        scst.check_settings(scst_samples, scst_baseline, scst_max_len)
        if isinstance(scst_from_epoch, bool) or not isinstance(scst_from_epoch, int) or scst_from_epoch < 0:
            raise ValueError(f"model.module.scst_from_epoch={scst_from_epoch!r}: the first self-critical epoch, a whole "
                             "number of at least 0 (0: from the start, e.g. after init_from=<an XE run>)")
        if not isinstance(scst_lr, (int, float)) or not scst_lr > 0:
            raise ValueError(f"model.module.scst_lr={scst_lr!r}: the learning rate of the self-critical epochs, a "
                             "positive number (5e-5 in the reference recipe)")
        if objective == "scst" and scheduler in ("step", "plateau"):
            raise ValueError(f"model.module.scheduler={scheduler}: the self-critical epochs (objective=scst) run at the "
                             "constant model.module.scst_lr; use scheduler=cosine or none for the epochs before them")
        check_optimisation(lr, encoder_lr, weight_decay, warmup_steps, alpha_c)
        check_recipe(scheduler, lr_decay, lr_step_epochs, lr_patience, monitor_mode, label_smoothing, scheduled_sampling,
                     scheduled_sampling_start, scheduled_sampling_ramp)
        for name, chosen in (("val_metrics", val_metrics), ("test_metrics", test_metrics or ())):
            unknown = [m for m in chosen if m not in METRICS]
            if unknown:
                raise ValueError(f"model.module.{name}={list(chosen)}: unknown metric(s) {unknown}; choose from {list(METRICS)}")
        # Checked at start-up, not at the first validation; errors name model.module.<stage>_decode.<key>.
        given = {"val": val_decode, "test": test_decode}
        self.decoding: dict[str, DecodeSettings] = {}  # "val", "test" -> settings, max_len given
        for stage, node in given.items():
            where = f"model.module.{stage}_decode"
            given[stage] = DecodeSettings.from_config(node, where)
            self.decoding[stage] = given[stage].with_max_len(vocab.max_len, where)
        # Plain data only, so checkpoints load with weights_only (Hydra passes ListConfig/DictConfig).
        val_decode, test_decode = dataclasses.asdict(given["val"]), dataclasses.asdict(given["test"])
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
        self.test_nbest = NBestCaptions(vocab)  # every caption of each image, when the test decodes n_best > 1
        self.draws: torch.Generator | None = None  # where a sampling evaluation draws from, seeded per epoch
        # What the last test decoded and scored (each image's caption with its BLEU-4 and CIDEr),
        # for capgen-eval's files and the run's test_captions.jsonl (every rank holds it all).
        self.last_test: dict[str, Any] = {}
        self.reward: CiderDReward | None = None  # SCST's, from set_train_references

    # ----- what the module is given -----------------------------------------------------
    def set_references(self, stage: Literal["val", "test"], references: Mapping[int, Sequence[str]]) -> None:
        """The reference captions of the split that `stage` scores (image id -> captions)."""
        self.scores(stage).set_references(references)

    def set_train_references(self, references: Mapping[int, Sequence[str]]) -> None:
        """The training split's reference captions (image id -> captions), for the SCST reward:
        CIDEr-D with document frequencies from all of them (capgen.metrics.cider_reward)."""
        self.reward = CiderDReward.from_captions(references, self.vocab)

    @property
    def uses_scst(self) -> bool:
        return self.hparams.objective == "scst"

    def set_scenes(self, scenes: Scenes | None) -> None:
        """The test split's scenes, for test/grounding (attention models only; None: no score)."""
        self.scenes = scenes if self.net.has_attention else None

    def configure_test(self, decode: DecodeSettings | None = None, metrics: Sequence[str] | None = None) -> None:
        """Decoding and scores of the next test, where they differ from the hyper-parameters."""
        if decode is not None:
            self.decoding["test"] = decode.with_max_len(self.vocab.max_len)
        if metrics is not None:
            references = self.test_scores.references
            self.test_scores = CaptionScores(self.vocab, references, metrics=tuple(metrics), tokenizer=self.hparams.tokenizer)

    def scores(self, stage: str) -> CaptionScores:
        return self.val_scores if stage == "val" else self.test_scores

    # ----- checkpoints ------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["vocab"] = self.vocab.to_dict()
        stamp(checkpoint)  # format and capgen version, checked when the file is read back
        if self.training_data is not None:  # what it was trained on (capgen.training.provenance)
            checkpoint[provenance.KEY] = dict(self.training_data)

    @classmethod
    def from_checkpoint(cls, path: str, setting: str = "ckpt_path") -> CaptioningModule:
        """The module a capgen checkpoint holds, on the CPU (capgen.training.checkpoint says
        what is checked; errors name `setting`=path)."""
        ckpt = read_checkpoint(path, setting)
        module = cls(net=build_captioner(ckpt.net_config, len(ckpt.vocab)), vocab=ckpt.vocab, **ckpt.hparams)
        module.trained_on = ckpt.trained
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

    def on_train_start(self) -> None:
        if self.uses_scst and self.reward is None:
            raise ValueError(
                "model.module.objective=scst: the module has no training references to reward its samples with; give "
                "them with module.set_train_references(datamodule.references('train')) (capgen-train does)"
            )
        self._said_scst = False

    def on_train_epoch_start(self) -> None:
        # One log line when the recipe turns self-critical (or the run starts, or resumes, past that epoch).
        hp = self.hparams
        if self.uses_scst and self.current_epoch >= hp.scst_from_epoch and not self._said_scst:
            before = f"after {hp.scst_from_epoch} cross-entropy epoch(s)" if hp.scst_from_epoch else "from the start"
            log.info("epoch %d: self-critical training (SCST) from epoch %d on, %s: %d samples per image, baseline %s, "
                     "lr %g", self.current_epoch, hp.scst_from_epoch, before, hp.scst_samples, hp.scst_baseline,
                     hp.scst_lr)
            self._said_scst = True

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        if self.uses_scst and self.current_epoch >= self.hparams.scst_from_epoch:
            return self._self_critical_step(batch)
        loss, xent = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch.images))
        self.log("train/xent", xent, batch_size=len(batch.images))
        return loss

    def _self_critical_step(self, batch: Batch) -> torch.Tensor:
        hp = self.hparams
        if self.reward.device != self.device:
            self.reward.to(self.device)
        out = scst.self_critical_step(
            self.net, batch.images, batch.image_ids, self.reward, self.vocab.start_id, self.vocab.end_id,
            hp.scst_max_len or self.vocab.max_len, hp.scst_samples, hp.scst_baseline,
        )
        words = ((out.tokens != self.vocab.pad_id) & (out.tokens != self.vocab.end_id)).sum(1)
        B = len(batch.images)
        self.log("train/loss", out.loss, prog_bar=True, batch_size=B)
        self.log_dict({"train/reward": out.reward.mean(), "train/baseline": out.baseline.mean(),
                       "train/advantage": out.advantage.mean(), "train/sample_len": words.float().mean()}, batch_size=B)
        return out.loss

    # ----- validation / test ------------------------------------------------------------
    def _stage(self) -> str:
        trainer = compat.attached_trainer(self)
        return "test" if trainer is not None and trainer.testing else "val"

    def generate(self, images: torch.Tensor, decode: DecodeSettings | None = None,
                 generator: torch.Generator | None = None) -> DecodeResult | NBestResult:
        """Captions for a batch (capgen.models.decoding.decode): as `decode` says, else as the
        stage decodes (the test's settings while testing, else validation's), sampling from
        `generator`, else from the evaluation's own (seeded at its start with decode.seed)."""
        if decode is None:
            decode, generator = self.decoding[self._stage()], generator if generator is not None else self.draws
        decode = decode.with_max_len(self.vocab.max_len)
        v = self.vocab
        return self.net.decode(images, decode, v.start_id, v.end_id, v.unk_id, v.max_len, generator)

    def _start_draws(self) -> None:
        settings = self.decoding[self._stage()]
        self.draws = None
        if settings.method == "sample":  # the same draws every epoch, and the global RNG untouched
            self.draws = torch.Generator(device=self.device).manual_seed(settings.seed)

    def on_validation_epoch_start(self) -> None:
        self._start_draws()

    def on_test_epoch_start(self) -> None:
        self._start_draws()

    def _eval_step(self, batch: Batch, stage: str) -> None:
        inputs, targets = batch.captions[:, :-1], batch.captions[:, 1:]  # (B, T-1) each
        logits, _ = self.net(batch.images, inputs)
        pad = self.vocab.pad_id
        # Per image, so DDP's repeated images count once (capgen.metrics.per_image).
        self.eval_loss[stage].update(batch.image_ids, token_losses(logits, targets, pad).sum(1), (targets != pad).sum(1))
        result = self.generate(batch.images)
        first = first_captions(result)  # each image's first (best) caption is the one scored
        self.scores(stage).update(batch.image_ids, first.tokens, first.logprob)
        if stage == "test" and isinstance(result, NBestResult):
            self.test_nbest.update(batch.image_ids, result)
        if stage == "test" and self.scenes is not None:
            self.test_grounding.add_captions(batch.image_ids, first.tokens, first.alphas, self.scenes,
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
            decode = self.decoding["test"]
            self.last_test = {"captions": metric.scored_captions, "grounding": None, "decode": dataclasses.asdict(decode)}
            if decode.n_best > 1:  # every caption of each image beside the scored first
                every = self.test_nbest.compute()
                self.test_nbest.reset()
                for row in self.last_test["captions"]:
                    row.update(every[row["image_id"]])
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
        if not self.uses_scst:
            total = self.trainer.estimated_stepping_batches if hp.scheduler == "cosine" else None
            scheduler = lr_scheduler(optimizer, hp, total)
            return optimizer if scheduler is None else {"optimizer": optimizer, "lr_scheduler": scheduler}
        # SCST: the schedule (cosine or none) spans the cross-entropy epochs only, then scst_lr holds.
        # estimated_stepping_batches loads the training data when the trainer has not yet, so the
        # batches per epoch are known after it (num_training_batches is inf until then).
        run_steps = self.trainer.estimated_stepping_batches
        per_epoch = math.ceil(self.trainer.num_training_batches / self.trainer.accumulate_grad_batches)
        # the first self-critical step; a run that ends before it (trainer.max_steps) spans its own steps
        scst_from = total = min(hp.scst_from_epoch * per_epoch, run_steps)
        warmup = min(hp.warmup_steps, max(total - 1, 0))

        def factor(step: int) -> float:  # linear warm-up, then cosine to zero; SCST: constant scst_lr
            if step >= scst_from:
                return hp.scst_lr / hp.lr
            if hp.scheduler == "none":
                return 1.0
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(total - warmup, 1)
            return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class NBestCaptions(PerImageMetric):
    """Every caption of each image when a test decodes n_best > 1: update(image_ids (B,),
    NBestResult (B, N, L)) per batch; compute() -> {image_id: {"captions": [N strings],
    "logprobs": [N floats, None where the search found no caption]}}, gathered across ranks."""

    FIELDS = ("tokens", "logprobs")

    def __init__(self, vocab: Vocabulary):
        super().__init__()
        self.vocab = vocab
        self.width = vocab.max_len + 2  # fixed, so that every rank's rows concatenate

    def update(self, image_ids: torch.Tensor, result: NBestResult) -> None:
        tokens = result.tokens[:, :, : self.width]
        padded = tokens.new_zeros(*tokens.shape[:2], self.width)
        padded[:, :, : tokens.shape[2]] = tokens
        self.add_rows(image_ids, tokens=padded.long(), logprobs=result.logprob.detach().double())

    def compute(self) -> dict[int, dict[str, list]]:
        ids, rows = self.per_image()
        return {
            i: {"captions": [self.vocab.decode(t) for t in tokens],
                "logprobs": [lp if math.isfinite(lp) else None for lp in logprobs]}
            for i, tokens, logprobs in zip(ids, rows["tokens"].tolist(), rows["logprobs"].tolist())
        }
