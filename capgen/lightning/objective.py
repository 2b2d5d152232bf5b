"""What the module trains for: `model.module.objective` (ObjectiveSettings), with its
scheduled sampling (`objective.scheduled_sampling`) and self-critical (`objective.scst`)
settings. Each setting is documented here, once; the defaults are the config's.

    capgen-train model.module.objective.label_smoothing=0.1
    capgen-train model.module.objective.name=scst model.module.objective.scst.from_epoch=8
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from ..models import scst
from .groups import check_ranges, read_group

WHERE = "model.module.objective"


@dataclass(frozen=True)
class SamplingSettings:
    """Scheduled sampling (Bengio et al. 2015; capgen.models.scheduled_sampling): while
    training, each input word is with probability p the model's own previous word.

    probability: the highest p (0: teacher forcing only, the decoders' fast path; 0.25 is usual),
        reached linearly over `ramp` epochs from epoch `start` (counted from 0).
    """

    probability: float = 0.0
    start: int = 0
    ramp: int = 1

    def __post_init__(self) -> None:
        check_ranges(f"{WHERE}.scheduled_sampling", (
            ("probability", self.probability, 0 <= self.probability <= 1,
             "a probability in [0, 1] (0: teacher forcing only; 0.25 is usual)"),
            ("start", self.start, self.start >= 0, "at least 0 (an epoch, counted from 0)"),
            ("ramp", self.ramp, self.ramp >= 1, f"at least 1 (epochs to reach {WHERE}.scheduled_sampling.probability)"),
        ))


@dataclass(frozen=True)
class SCSTSettings:
    """Self-critical sequence training (Rennie et al. 2017; capgen.models.scst), read when
    objective.name=scst.

    from_epoch: the first self-critical epoch (counted from 0); the epochs before it train with
        cross-entropy, so one run can chain both (0: from the start, e.g. after init_from=<an XE run>).
    samples: captions sampled per image, each rewarded with CIDEr-D against the image's training
        references (capgen.metrics.cider_reward).
    baseline: what a sample's reward is measured against: mean (the image's other samples) or
        greedy (its greedy caption).
    max_len: the most words of a sampled caption (null: the vocabulary's max_len).
    lr: the constant learning rate of the self-critical epochs: every parameter group's rate is
        scaled by lr / optimizer.lr, so the encoder keeps its ratio. The epochs before them follow
        model.module.scheduler (cosine or none) as a run of from_epoch epochs would.
    """

    from_epoch: int = 0
    samples: int = 5
    baseline: Literal["greedy", "mean"] = "mean"
    max_len: int | None = None
    lr: float = 5e-5

    def __post_init__(self) -> None:
        where = f"{WHERE}.scst."
        scst.check_scst_settings(self.samples, self.baseline, self.max_len, prefix=where)
        if isinstance(self.from_epoch, bool) or not isinstance(self.from_epoch, int) or self.from_epoch < 0:
            raise ValueError(f"{where}from_epoch={self.from_epoch!r}: the first self-critical epoch, a whole number of "
                             "at least 0 (0: from the start, e.g. after init_from=<an XE run>)")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not self.lr > 0:
            raise ValueError(f"{where}lr={self.lr!r}: the learning rate of the self-critical epochs, a positive number "
                             "(5e-5 in the reference recipe)")


@dataclass(frozen=True)
class ObjectiveSettings:
    """The training loss.

    name: xe (cross-entropy) or scst (cross-entropy until scst.from_epoch, then self-critical).
    alpha_c: the weight of the doubly stochastic attention regulariser (Xu et al. 2015, eq. 14;
        attention models only; 0: none).
    label_smoothing: of the training cross-entropy (Szegedy et al. 2016; 0: none, 0.1 is usual);
        val/loss stays the plain cross-entropy.
    scheduled_sampling, scst: SamplingSettings, SCSTSettings above.
    """

    name: Literal["xe", "scst"] = "xe"
    alpha_c: float = 1.0
    label_smoothing: float = 0.0
    scheduled_sampling: SamplingSettings = field(default_factory=SamplingSettings)
    scst: SCSTSettings = field(default_factory=SCSTSettings)

    def __post_init__(self) -> None:
        # nested nodes arrive as mappings (a config node, a checkpoint's dict)
        object.__setattr__(self, "scheduled_sampling",
                           read_group(SamplingSettings(), self.scheduled_sampling, f"{WHERE}.scheduled_sampling"))
        object.__setattr__(self, "scst", read_group(SCSTSettings(), self.scst, f"{WHERE}.scst"))
        if self.name not in ("xe", "scst"):
            raise ValueError(f"{WHERE}.name={self.name!r}: use xe (cross-entropy) or scst (self-critical)")
        check_ranges(WHERE, (
            ("alpha_c", self.alpha_c, self.alpha_c >= 0 and math.isfinite(self.alpha_c),
             "at least 0 (0: no attention regularisation)"),
            ("label_smoothing", self.label_smoothing, 0 <= self.label_smoothing < 1, "in [0, 1) (0: none; 0.1 is usual)"),
        ))

    @property
    def uses_scst(self) -> bool:
        return self.name == "scst"

    def scst_at(self, epoch: int) -> bool:
        """Whether `epoch` (counted from 0) trains self-critically."""
        return self.uses_scst and epoch >= self.scst.from_epoch
