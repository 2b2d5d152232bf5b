"""What a run's test leaves beside its summary.json: test_captions.jsonl, the test of the best
checkpoint image by image, for capgen-compare --paired; and, across a resume with test=false,
the earlier test/* of a best checkpoint that is still the run's best (capgen.runs.records writes
the summary itself).

    <run>/test_captions.jsonl  one {"image_id", "caption", "BLEU-4", "CIDEr"} per image
                               (pycocoevalcap's per-image scores)
"""

from __future__ import annotations

import json
import logging
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf

from ..atomic import write_atomically
from .records import UnreadableRecord, read_summary, relative_to_run

log = logging.getLogger(__name__)

TEST_CAPTIONS = "test_captions.jsonl"
PER_IMAGE_SCORES = ("BLEU-4", "CIDEr")


@dataclass(frozen=True)
class EarlierTest:
    """The test/* a run's summary.json records (and the decode settings they are for), with the
    best checkpoint they were measured on as it was on disk when read: its path in the summary
    and its (size, modification time), which any rewrite changes (capgen.atomic)."""

    checkpoint: str
    stamp: tuple[int, int]
    metrics: dict[str, float]
    decode: dict | None

    @classmethod
    def read(cls, run: Path) -> EarlierTest | None:
        """The run's earlier test, read before a resume trains (None when its summary records no
        test/*, no best checkpoint that is on disk, or cannot be read)."""
        try:
            summary = read_summary(run) or {}
        except UnreadableRecord:
            return None
        metrics = {k: v for k, v in summary.get("metrics", {}).items() if k.startswith("test/")}
        best = summary.get("best_checkpoint")
        if not metrics or not best or not (run / best).is_file():
            return None
        return cls(best, _stamp(run / best), metrics, summary.get("test_decode"))

    def describes(self, run: Path, best_checkpoint: str | None) -> bool:
        """Whether the run's best checkpoint now is the very file these test/* were measured on:
        the same path, not written since. A resume that made a new best (another epoch's file)
        or wrote the same name again has scores for weights this test never saw."""
        path = run / self.checkpoint
        return relative_to_run(run, best_checkpoint) == self.checkpoint and path.is_file() and _stamp(path) == self.stamp


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def forget_test_captions(run: Path) -> None:
    """Move the run's test_captions.jsonl, the per-image test of a best checkpoint the run no
    longer has (a resume with test=false made a new best), out of the way: capgen-compare
    --paired would compare it as this run's, and says, without it, how to test the run
    (_how_to_test). Kept beside the resume's copy of the run's earlier records
    (.hydra/before-resume-<time>/, keep_before_resume), as nothing a run wrote is deleted."""
    path = run / TEST_CAPTIONS
    if not path.is_file():
        return
    kept = sorted((run / ".hydra").glob("before-resume-*"))  # the newest last: named by the time
    where = kept[-1] if kept else run / ".hydra"
    where.mkdir(parents=True, exist_ok=True)
    os.replace(path, where / TEST_CAPTIONS)
    log.info("%s moved to %s: it was the test of the run's earlier best checkpoint, which this resume replaced "
             "(test=false: the new one is not tested)", path, where)


def write_test_captions(run: Path, rows: list[dict]) -> None:
    """The test's caption and per-image scores of every image (rows as CaptionScores.scored_captions)."""
    keys = ("image_id", "caption", *PER_IMAGE_SCORES)
    text = "".join(json.dumps({k: r[k] for k in keys if k in r}) + "\n" for r in rows)
    write_atomically(run / TEST_CAPTIONS, text.encode())


def read_test_captions(run: Path) -> dict[int, dict[str, float]]:
    """Image id -> {"BLEU-4": ..., "CIDEr": ...} from the run's test_captions.jsonl; a ValueError
    that names the file, what writes it and the command that writes it for this run when the
    run has none (_how_to_test), UnreadableRecord when it cannot be read."""
    path = run / TEST_CAPTIONS
    if not path.is_file():
        raise ValueError(
            f"{run} has no per-image test scores: {path} is missing. capgen-train writes it when it tests the "
            f"run's best checkpoint at the end of training (test=true, the default); {_how_to_test(run)}"
        )
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UnreadableRecord(f"{path}: cannot be read ({e})") from None
    scores = {}
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
            scores[int(row["image_id"])] = {k: float(row[k]) for k in PER_IMAGE_SCORES if k in row}
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise UnreadableRecord(f"{path}: line {number} is not a test caption record ({e!r})") from None
    return scores


def _how_to_test(run: Path) -> str:
    """Why `run` has no test_captions.jsonl and the command that writes it, by how the run ended
    (its summary.json). A run with a last.ckpt is resumed: `resume=` tests the best checkpoint
    once the training ends, and a completed run's resume trains nothing more (training it again
    would take as long as it took). Else it is trained again."""
    try:
        summary = read_summary(run) or {}
    except UnreadableRecord:
        summary = {}
    status = summary.get("status")
    if not (run / "checkpoints" / "last.ckpt").is_file() or status not in ("completed", "interrupted", "failed"):
        return (f"this run was trained with test=false, stopped before its test, or by a capgen older than this file. "
                f"Train it again with capgen-train <its overrides> test=true (its overrides are in "
                f"{run / '.hydra' / 'overrides.yaml'}).")
    # A resume keeps the run's own test=false unless told otherwise.
    resume = f"capgen-train resume={shlex.quote(str(run))}" + ("" if _tests(run) and status != "completed" else " test=true")
    if status == "completed":
        return (f"this run was trained with test=false, or by a capgen older than this file. {resume} tests its best "
                f"checkpoint and writes it (the run is complete: its resume trains nothing more).")
    if status == "interrupted":
        return (f"this run was interrupted ({summary.get('signal', 'by a signal')}) before its test. Continue it with "
                f"{resume}: it tests its best checkpoint when its training ends.")
    return (f"this run failed before its test (its traceback is in {run / summary.get('traceback', 'error.txt')}). "
            f"Fix the cause, then continue it with {resume}: it tests its best checkpoint when its training ends.")


def _tests(run: Path) -> bool:
    """Whether the run's saved config tests its best checkpoint at the end (test=true; assumed
    when the config cannot be read: the resume would then say what is wrong with it)."""
    try:
        cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return True
    return not (isinstance(cfg, DictConfig) and cfg.get("test", True) is False)
