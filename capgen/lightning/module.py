"""The LightningModule: losses, decoding for validation/test, metrics, optimizers.

It receives its network already built (a Captioner) and the vocabulary, and from whoever
runs it (capgen.commands.train.fit, capgen-eval) the references of the splits it scores, for
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
from dataclasses import dataclass, field
from typing import Any, Literal

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from ..data.datamodule import Batch, Scenes
from ..metrics.captions import METRICS, CaptionScores, default_metrics
from ..metrics.cider_reward import CiderDReward
from ..metrics.grounding import GroundingScores
from ..metrics.loss import ImageMeanLoss
from ..metrics.per_image import PerImageMetric
from ..models import scst
from ..models.captioner import Captioner, build_captioner
from ..models.decoders import Rows
from ..models.losses import caption_loss, doubly_stochastic, token_losses, word_layer_loss
from ..models.scheduled_sampling import sampled_forward, sampling_probability
from ..models.search import DecodeResult, DecodeSettings, NBestResult, first_captions
from ..models.word_vectors import load_word_vectors
from ..runs import provenance
from ..runs.checkpoint import read_checkpoint, stamp
from ..vocab import Vocabulary
from . import compat, optimization
from .groups import read_group
from .objective import ObjectiveSettings
from .optimization import OptimizerSettings, SchedulerSettings, check_scst_schedule

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageSettings:
    """How an evaluation stage decodes and what it scores: `model.module.val` (every epoch) and
    `model.module.test` (the best checkpoint, after fitting).

    decode: DecodeSettings (capgen.models.search.settings), greedy for val (cheap every epoch),
        a beam of 3 for the test; with n_best > 1 each image's first caption is the one scored.
    metrics: val's are computed every epoch, so they are the cheap ones; null (the test's
        default): every score that can run here (capgen.metrics.default_metrics).
    """

    decode: DecodeSettings = field(default_factory=DecodeSettings)
    metrics: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "decode", DecodeSettings.from_config(self.decode))  # a mapping of its keys, too
        if self.metrics is not None:
            object.__setattr__(self, "metrics", tuple(self.metrics))  # a config gives a list


# The groups' defaults (a group's config node is generated from them: capgen.config.registry).
OPTIMIZER, SCHEDULER, OBJECTIVE = OptimizerSettings(), SchedulerSettings(), ObjectiveSettings()
VAL = StageSettings(metrics=("BLEU", "CIDEr"))
TEST = StageSettings(decode=DecodeSettings(method="beam", beam_size=3))


def _read_stage(default: StageSettings, given: StageSettings | Mapping[str, Any], stage: str) -> StageSettings:
    """read_group for a stage, whose decode errors name model.module.<stage>.decode.<key>."""
    where = f"model.module.{stage}"
    if isinstance(given, Mapping):
        given = OmegaConf.to_container(given, resolve=True) if isinstance(given, DictConfig) else dict(given)
        if "decode" in given:
            given["decode"] = DecodeSettings.from_config(given["decode"], f"{where}.decode")
    return read_group(default, given, where)


class CaptioningModule(L.LightningModule):
    def __init__(
        self,
        net: Captioner,
        vocab: Vocabulary,
        net_config: dict | None = None,
        optimizer: OptimizerSettings | Mapping[str, Any] = OPTIMIZER,
        scheduler: SchedulerSettings | Mapping[str, Any] = SCHEDULER,
        objective: ObjectiveSettings | Mapping[str, Any] = OBJECTIVE,
        val: StageSettings | Mapping[str, Any] = VAL,
        test: StageSettings | Mapping[str, Any] = TEST,
        tokenizer: str = "python",
        word_vectors: str | None = None,
        freeze_word_vectors: bool = False,
    ):
        """optimizer, scheduler (capgen.lightning.optimization), objective
        (capgen.lightning.objective), val and test (StageSettings): each a group of settings, or
        a mapping of some of its keys (the others at the argument's default). tokenizer: how
        the scores tokenize captions: "python" (capgen's, token for token equal to the
        official one on real captions and no JVM start per evaluation), "java" (the official
        PTBTokenizer) or "auto". word_vectors: a GloVe-format file for the decoder's word
        embedding, frozen (freeze_word_vectors) or fine-tuned (capgen.models.word_vectors)."""
        super().__init__()
        # {data, source, image_size} of the training data, set by capgen.commands.train.fit and saved in every
        # checkpoint; trained_on: what a checkpoint read back says (from_checkpoint).
        self.training_data: dict[str, Any] | None = None
        self.trained_on: provenance.TrainedOn | None = None
        # An ensemble's (capgen.lightning.inference.load_checkpoints): each member's, in order; () for one checkpoint.
        self.members_trained_on: tuple[provenance.TrainedOn | None, ...] = ()
        self.optimizer_settings = read_group(OPTIMIZER, optimizer, "model.module.optimizer")
        self.scheduler_settings = read_group(SCHEDULER, scheduler, "model.module.scheduler")
        self.objective = read_group(OBJECTIVE, objective, "model.module.objective")
        check_scst_schedule(self.objective, self.scheduler_settings)
        stages = {"val": _read_stage(VAL, val, "val"), "test": _read_stage(TEST, test, "test")}
        for stage, settings in stages.items():
            unknown = [m for m in settings.metrics or () if m not in METRICS]
            if unknown:
                raise ValueError(f"model.module.{stage}.metrics={list(settings.metrics)}: unknown metric(s) {unknown}; "
                                 f"choose from {list(METRICS)}")
        # "val", "test" -> how each decodes, max_len given; checked at start-up, not at the first validation
        self.decoding: dict[str, DecodeSettings] = {
            stage: settings.decode.with_max_len(vocab.max_len, f"model.module.{stage}.decode")
            for stage, settings in stages.items()}
        # The hyper-parameters as plain data, so checkpoints load with weights_only.
        optimizer, scheduler, objective = (dataclasses.asdict(g) for g in (
            self.optimizer_settings, self.scheduler_settings, self.objective))
        val, test = dataclasses.asdict(stages["val"]), dataclasses.asdict(stages["test"])
        if isinstance(net_config, DictConfig):
            net_config = OmegaConf.to_container(net_config, resolve=True)
        # net and vocab are live objects: the checkpoint keeps net_config and the vocabulary instead.
        self.save_hyperparameters(ignore=["net", "vocab"])
        self.net, self.vocab = net, vocab
        # No note on SPICE here: capgen-eval may score other metrics (configure_test); capgen-train's
        # consistency check notes it for a run that will score these.
        self.val_scores = CaptionScores(vocab, metrics=stages["val"].metrics or default_metrics(note=False), tokenizer=tokenizer)
        self.test_scores = CaptionScores(vocab, metrics=stages["test"].metrics or default_metrics(note=False), tokenizer=tokenizer)
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
        return self.objective.uses_scst

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
        if self.training_data is not None:  # what it was trained on (capgen.runs.provenance)
            checkpoint[provenance.KEY] = dict(self.training_data)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Fitting on from a checkpoint (ckpt_path=, resume=): Lightning restores the optimizer and
        # schedule next, over the settings given now; refused when they differ (see the function).
        if self.trainer.state.fn == "fit":
            now = {group: dataclasses.asdict(s) for group, s in (("optimizer", self.optimizer_settings),
                                                                 ("scheduler", self.scheduler_settings))}
            saved = {group: checkpoint["hyper_parameters"].get(group) for group in now}
            changes = optimization.restored_settings_changes(saved, now, str(self.trainer.ckpt_path))
            if changes:
                raise ValueError(changes)

    @classmethod
    def from_checkpoint(cls, path: str, setting: str = "ckpt_path") -> CaptioningModule:
        """The module a capgen checkpoint holds, on the CPU (capgen.runs.checkpoint says
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
        s = self.objective.scheduled_sampling
        return sampling_probability(self.current_epoch, s.probability, s.start, s.ramp)

    def _loss(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = batch.captions[:, :-1], batch.captions[:, 1:]  # (R, T-1) each, R = B k
        k = batch.captions_per_image
        # k captions per image: each image's encoding, projection and initial state are shared
        rows = Rows.each(len(batch.images), k, batch.captions.device) if k > 1 else None
        p = self.sampling_probability() if self.training else 0.0
        if p > 0:
            logits, alphas = sampled_forward(self.net, batch.images, inputs, p, self.vocab.start_id, rows=rows)
            if compat.attached_trainer(self) is not None:
                self.log("train/sampling_prob", p, batch_size=len(batch.images))
            xent = caption_loss(logits, targets, self.vocab.pad_id, self.objective.label_smoothing)
        else:  # teacher forcing, the decoders' fast path; the word layer runs inside the loss
            hidden, alphas = self.net(batch.images, inputs, rows, words=False)
            xent = word_layer_loss(self.net.decoder.out, hidden, targets, self.vocab.pad_id, self.objective.label_smoothing)
        if alphas is None or self.objective.alpha_c == 0:
            return xent, xent
        reg = doubly_stochastic(alphas, targets != self.vocab.pad_id)
        return xent + self.objective.alpha_c * reg, xent

    def on_train_start(self) -> None:
        if self.uses_scst and self.reward is None:
            raise ValueError(
                "model.module.objective.name=scst: the module has no training references to reward its samples with; give "
                "them with module.set_train_references(datamodule.references('train')) (capgen-train does)"
            )
        self._said_scst = False

    def on_train_epoch_start(self) -> None:
        # One log line when the recipe turns self-critical (or the run starts, or resumes, past that epoch).
        sc = self.objective.scst
        if self.objective.scst_at(self.current_epoch) and not self._said_scst:
            before = f"after {sc.from_epoch} cross-entropy epoch(s)" if sc.from_epoch else "from the start"
            log.info("epoch %d: self-critical training (SCST) from epoch %d on, %s: %d samples per image, baseline %s, "
                     "lr %g", self.current_epoch, sc.from_epoch, before, sc.samples, sc.baseline, sc.lr)
            self._said_scst = True

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        if self.objective.scst_at(self.current_epoch):
            return self._self_critical_step(batch)
        loss, xent = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch.images))
        self.log("train/xent", xent, batch_size=len(batch.images))
        return loss

    def _self_critical_step(self, batch: Batch) -> torch.Tensor:
        sc = self.objective.scst
        if self.reward.device != self.device:
            self.reward.to(self.device)
        out = scst.self_critical_step(
            self.net, batch.images, batch.image_ids, self.reward, self.vocab.start_id, self.vocab.end_id,
            sc.max_len or self.vocab.max_len, sc.samples, sc.baseline,
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
        # None without a trainer (a benchmark's optimizer step): only the cosine and SCST schedules read it
        trainer = compat.attached_trainer(self)
        return optimization.configure_optimizers(self.net, trainer, self.optimizer_settings, self.scheduler_settings,
                                                 self.objective)


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
