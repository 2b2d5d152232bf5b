"""Starting a new run from another run's network weights: `capgen-train init_from=<checkpoint or run>`.

Unlike a resume (`resume=`, `ckpt_path=`: the same run continues with its optimizer,
schedule, epoch count and folder), `init_from` starts a new run in a new folder with a new
optimizer, schedule and epoch count, from the network weights alone: e.g. self-critical
training (model.module.objective.name=scst) after a cross-entropy run. The run keeps the
checkpoint's vocabulary (its word ids are the network's), and its network settings (model=...
and model.* overrides) must build the checkpoint's network; that is checked before anything
is built. A run folder stands for its best checkpoint (as summary.json names it).

The checkpoint's vocabulary must cover the data's words: a word it lacks is <unk> in every
target and can never be written, so a checkpoint trained on other data would train to a
score near 0 and still complete. The coverage (the share of the words the data's own
vocabulary would have) is logged, and below `init_from_min_coverage` (0.5 by default;
0 accepts any) the run is refused at start-up.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from ..models.captioner import Captioner
from ..vocab import SPECIALS, Vocabulary
from .checkpoint import Checkpoint, read_checkpoint
from .records import SUMMARY, read_summary
from .resume import network_differences

SETTING = "init_from"
log = logging.getLogger(__name__)


def init_checkpoint(cfg: DictConfig, net_config: dict) -> Checkpoint | None:
    """The checkpoint `init_from` names, checked against the network `net_config` builds;
    None without init_from, or when the run resumes (its own checkpoint holds its weights)."""
    given = cfg.get(SETTING)
    if not given or cfg.get("resume"):
        return None
    if cfg.get("ckpt_path"):
        raise ValueError(
            f"{SETTING}={given} with ckpt_path={cfg.ckpt_path}: ckpt_path= resumes a run from its checkpoint (weights, "
            f"optimizer, schedule, epoch), {SETTING}= starts a new run from another run's network weights only. Give "
            "one of the two."
        )
    path = checkpoint_file(Path(str(given)))
    ckpt = read_checkpoint(path, SETTING)
    differ = network_differences(ckpt.net_config, net_config)
    if differ:
        raise ValueError(
            f"{SETTING}={given}: the checkpoint holds another network than this run builds ({'; '.join(differ[:4])}), "
            "so its weights cannot start it. Give the model=... and model.encoder.* / model.decoder.* overrides the "
            "checkpoint was trained with (its run's .hydra/overrides.yaml lists them); settings of model.module.*, "
            "data.*, trainer.* may differ."
        )
    return ckpt


def checkpoint_file(path: Path) -> Path:
    """`path` itself, or for a capgen-train run folder the best checkpoint its summary.json names."""
    if not path.is_dir():
        return path  # read_checkpoint says what is wrong with a missing or bad file
    summary = read_summary(path)
    files = sorted(p.name for p in (path / "checkpoints").glob("*.ckpt"))
    instead = f"give a checkpoint file instead ({SETTING}=<folder>/checkpoints/<file>.ckpt; here: {files or 'none'})"
    if summary is None:
        raise ValueError(f"{SETTING}={path}: a folder without {SUMMARY}, so not a finished capgen-train run folder "
                         f"(a run folder stands for the best checkpoint its {SUMMARY} names); {instead}")
    # An interrupted or failed run records its best checkpoint so far (capgen.runs.records): taken,
    # with a warning, as capgen-eval run= takes it (a cross-entropy run stopped by hand, then SCST).
    best, status = summary.get("best_checkpoint"), summary["status"]
    if not best or not (path / best).is_file():
        state = {"completed": "recorded no best checkpoint", "interrupted": "was interrupted before its first best "
                 "checkpoint"}.get(status, f"is {status} with no best checkpoint")
        raise ValueError(f"{SETTING}={path}: the run {state} ({SUMMARY}); {instead}")
    if status != "completed":
        log.warning("%s=%s: the run %s before it finished; starting from its best checkpoint so far, %s", SETTING, path,
                    "was interrupted" if status == "interrupted" else "failed", best)
    return path / best


def load_network(net: Captioner, ckpt: Checkpoint) -> None:
    """The checkpoint's network weights into `net` (built from the same settings)."""
    weights = {k.removeprefix("net."): v for k, v in ckpt.state_dict.items() if k.startswith("net.")}
    try:
        net.load_state_dict(weights)
    except RuntimeError as e:  # read fine, but the weights do not fit
        detail = " ".join(str(e).split())
        raise ValueError(f"{SETTING}={ckpt.path}: its weights do not fit the network its net_config builds ({detail})") from None


def words_not_in(vocab, captions, min_freq: int, max_len: int) -> tuple[list[str], list[str]]:
    """The data's words (those its own vocabulary would hold: `captions` counted with min_freq
    and max_len), and those of them `vocab` lacks, which would be <unk> in every target."""
    data_words = Vocabulary.build(captions, min_freq=min_freq, max_len=max_len).itos[len(SPECIALS):]
    known = set(vocab.itos)
    return data_words, [w for w in data_words if w not in known]


def check_coverage(ckpt: Checkpoint, captions, min_freq: int, max_len: int, min_coverage: float) -> float:
    """The share of the data's words (those its own vocabulary would hold: `captions` of the
    train split counted with min_freq and max_len) in the checkpoint's vocabulary, logged;
    a ValueError when it is below `min_coverage`."""
    if isinstance(min_coverage, bool) or not isinstance(min_coverage, (int, float)) or not 0 <= min_coverage <= 1:
        raise ValueError(f"init_from_min_coverage={min_coverage!r}: a share from 0 to 1 (0: any checkpoint), e.g. 0.5")
    data_words, missing = words_not_in(ckpt.vocab, captions, min_freq, max_len)
    coverage = 1 - len(missing) / max(len(data_words), 1)
    log.info("init_from: the checkpoint's vocabulary covers %d of the data's %d words (%.0f%%)",
             len(data_words) - len(missing), len(data_words), 100 * coverage)
    if coverage < min_coverage:
        raise ValueError(
            f"{SETTING}={ckpt.path}: its vocabulary covers {len(data_words) - len(missing)} of the {len(data_words)} words "
            f"of this run's training captions ({100 * coverage:.0f}%; missing e.g. {', '.join(missing[:5])}), so those "
            f"words would be <unk> in every target and never written: it was trained on other data. Start from a "
            f"checkpoint of this data, train without {SETTING}, or accept it with "
            f"init_from_min_coverage={coverage:.2f} (0: any)."
        )
    return coverage
