"""Caption scores as a torchmetrics Metric, computed by the official pycocoevalcap scorers.

`score_captions` does what the COCO caption server does: PTB-tokenize predictions and
references (capgen's Python tokenizer, or the official Java one), then hand them to
pycocoevalcap's BLEU-1..4, METEOR 1.5, ROUGE-L, CIDEr-D and SPICE scorers.

METEOR runs in a Java subprocess whose start-up (loading its paraphrase table) takes about
ten seconds, so one subprocess per Python process is kept and reused by every call; it is
closed at exit. SPICE needs Stanford CoreNLP models that pycocoevalcap would download on
first use; offline they are usually missing, and then SPICE is skipped with one log line.

The metric's state holds tensors only (image ids and generated token ids), so Lightning
gathers it across DDP ranks with an ordinary all-gather; references stay on every rank as a
plain dict. Images that the distributed sampler repeated to even out the last batch are
scored once (capgen.metrics.per_image).
"""

from __future__ import annotations

import atexit
import inspect
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge

# PUNCT: pycocoevalcap's PUNCTUATIONS as lower-cased output can hold them; LINE_BREAKS: the
# characters that end a line for the Java tokenizer (pycocoevalcap only replaces "\n", so any
# other one shifts every later caption onto the wrong image), made spaces.
from ..tokenizer import LINE_BREAKS, PUNCT, tokenize
from ..vocab import Vocabulary
from .per_image import PerImageMetric

log = logging.getLogger(__name__)

# What a caller may ask for, and the keys each one adds to the result.
METRICS = {
    "BLEU": ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4"),
    "METEOR": ("METEOR",),
    "ROUGE-L": ("ROUGE-L",),
    "CIDEr": ("CIDEr",),
    "SPICE": ("SPICE",),
}
TOKENIZERS = ("python", "java", "auto")

_PACKAGE = Path(inspect.getfile(Bleu)).resolve().parents[1]  # pycocoevalcap/ (a namespace package)
_PTB_JAR = _PACKAGE / "tokenizer" / "stanford-corenlp-3.4.1.jar"
# pycocoevalcap.spice.get_stanford_models downloads these two on first use when missing.
_SPICE_MODELS = [_PACKAGE / "spice" / "lib" / f"stanford-corenlp-3.6.0{s}.jar" for s in ("", "-models")]


def score_captions(
    predictions: Mapping[int, str],
    references: Mapping[int, Sequence[str]],
    metrics: Iterable[str] = ("BLEU", "CIDEr"),
    tokenizer: str = "python",
) -> dict[str, float]:
    """Official COCO caption scores of `predictions` (image id -> caption) against `references`.

    metrics: any of "BLEU" (BLEU-1..4, closest reference length), "METEOR" (METEOR 1.5),
    "ROUGE-L", "CIDEr" (CIDEr-D, document frequencies from these references) and "SPICE"
    (skipped, with one log line, when its CoreNLP models or java are missing).
    tokenizer: "python" (capgen.tokenizer.tokenize), "java" (the official PTBTokenizer, needs
    java on PATH) or "auto" (java when it is on PATH, else python); the two give the same
    tokens on real captions (see capgen.tokenizer.tokenize).
    Returns {"BLEU-1": ..., "BLEU-4": ..., "METEOR": ..., "ROUGE-L": ..., "CIDEr": ..., "SPICE": ...},
    the keys of the metrics asked for.
    """
    return score_captions_per_image(predictions, references, metrics, tokenizer)[0]


def score_captions_per_image(
    predictions: Mapping[int, str],
    references: Mapping[int, Sequence[str]],
    metrics: Iterable[str] = ("BLEU", "CIDEr"),
    tokenizer: str = "python",
) -> tuple[dict[str, float], dict[int, dict[str, float]]]:
    """score_captions' corpus scores, and each image's own BLEU-4 and CIDEr from the same run of
    the scorers: ({"BLEU-1": ..., "CIDEr": ...}, {image_id: {"BLEU-4": ..., "CIDEr": ...}}).

    The per-image values are pycocoevalcap's own per-image outputs: Bleu's sentence-level
    BLEU-4 (closest reference length, its 1e-15/1e-9 smoothing of empty n-gram counts) and
    Cider's per-image CIDEr-D (document frequencies from all of `references`, so an image's
    score depends on the set it is scored in). Only BLEU-4 and CIDEr, and only when asked for.
    """
    metrics = _check_metrics(metrics)
    tokenizer = _check_tokenizer(tokenizer)
    if not predictions:
        raise ValueError("no captions to score")
    ids = list(predictions)
    missing = [i for i in ids if i not in references]
    if missing:
        raise KeyError(f"no references for image ids {missing[:5]} (of {len(missing)})")
    empty = [i for i in ids if not references[i]]
    if empty:
        raise ValueError(f"empty reference list for image ids {empty[:5]} (of {len(empty)})")
    if "METEOR" in metrics and not shutil.which("java"):
        raise RuntimeError("METEOR runs meteor-1.5.jar and needs java on PATH; install a JRE or leave METEOR out")

    # The scorers take space-joined tokens, one list of captions per image, as the official
    # pipeline feeds them. Java tokenizes references and predictions in two runs, like
    # COCOEvalCap, because its tokens can depend on the line that follows (see tokenize).
    refs = [r for i in ids for r in references[i]]
    ref_tokens = tokenize_captions(refs, tokenizer)
    pred_tokens = tokenize_captions([predictions[i] for i in ids], tokenizer)
    gts, start = {}, 0
    for i in ids:
        gts[i] = [" ".join(t) for t in ref_tokens[start : start + len(references[i])]]
        start += len(references[i])
    res = {i: [" ".join(t)] for i, t in zip(ids, pred_tokens)}

    scores: dict[str, float] = {}
    per_image: dict[int, dict[str, float]] = {i: {} for i in ids}
    if "BLEU" in metrics:
        bleu, sentence_bleu = Bleu(4).compute_score(gts, res, verbose=0)
        scores.update({f"BLEU-{n + 1}": float(b) for n, b in enumerate(bleu)})
        for i, b in zip(ids, sentence_bleu[3]):  # in the order of gts, which is ids'
            per_image[i]["BLEU-4"] = float(b)
    if "METEOR" in metrics:
        scores["METEOR"] = _METEOR.score(gts, res)
    if "ROUGE-L" in metrics:
        scores["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    if "CIDEr" in metrics:
        cider, image_cider = Cider().compute_score(gts, res)
        scores["CIDEr"] = float(cider)
        for i, c in zip(ids, image_cider.tolist()):
            per_image[i]["CIDEr"] = c
    if "SPICE" in metrics:
        spice = _spice(gts, res)
        if spice is not None:
            scores["SPICE"] = spice
    return scores, per_image


def tokenize_captions(captions: Sequence[str], tokenizer: str = "python") -> list[list[str]]:
    """Each caption's tokens as the scorers see them: "python" (capgen.tokenizer.tokenize), "java"
    (the official PTBTokenizer, one run for all of `captions`) or "auto" (java when on PATH)."""
    tokenizer = _check_tokenizer(tokenizer)
    if tokenizer == "auto":
        tokenizer = "java" if shutil.which("java") else "python"
    if tokenizer == "java":
        return ptb_tokenize_java(captions)
    return [tokenize(c) for c in captions]


def ptb_tokenize_java(captions: Sequence[str]) -> list[list[str]]:
    """Tokens of each caption from the official Java PTBTokenizer, as pycocoevalcap gets them.

    Same jar, flags (-preserveLines -lowerCase), one-caption-per-line input and punctuation
    removal as pycocoevalcap.tokenizer.PTBTokenizer, but it writes its input to a temporary
    directory rather than into site-packages, turns every line-breaking character into a
    space, and checks that it got one line back per caption.
    """
    if not captions:
        return []
    if not shutil.which("java"):
        raise RuntimeError("the official PTB tokenizer is Java: no java on PATH (use tokenizer='python')")
    lines = [c.translate(LINE_BREAKS) for c in captions]
    with tempfile.TemporaryDirectory(prefix="capgen-ptb-") as tmp:
        path = Path(tmp) / "captions.txt"
        path.write_text("\n".join(lines), encoding="utf-8")
        cmd = ["java", "-cp", str(_PTB_JAR), "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase", str(path)]
        run = subprocess.run(cmd, capture_output=True)
    if run.returncode != 0:
        raise RuntimeError(f"PTBTokenizer failed ({run.returncode}): {run.stderr.decode(errors='replace')[-500:]}")
    rows = run.stdout.decode("utf-8").split("\n")
    if len(rows) < len(lines):
        raise RuntimeError(f"PTBTokenizer gave {len(rows)} lines for {len(lines)} captions")
    return [[w for w in row.rstrip().split(" ") if w and w not in PUNCT] for row in rows[: len(lines)]]


def spice_available() -> bool:
    """Whether SPICE can run here: java on PATH and the CoreNLP jars it would otherwise download."""
    return shutil.which("java") is not None and all(p.is_file() for p in _SPICE_MODELS)


_spice_warned = False


def _spice(gts: dict, res: dict) -> float | None:
    """SPICE, or None (logged once per process) when it cannot run; it never fails a run."""
    global _spice_warned
    if shutil.which("java") is None:
        reason = "java is not on PATH"
    elif not spice_available():
        missing = ", ".join(str(p) for p in _SPICE_MODELS if not p.is_file())
        reason = (f"its Stanford CoreNLP models are missing ({missing}); pycocoevalcap downloads them with "
                  "python -m pycocoevalcap.spice.get_stanford_models")
    else:
        try:
            from pycocoevalcap.spice.spice import Spice

            return float(Spice().compute_score(gts, res)[0])
        except Exception as e:  # a crashed JVM (SPICE asks for 8 GB) must not end training
            reason = f"it failed: {e!r}"
    if not _spice_warned:
        log.warning("SPICE skipped: %s", reason)
        _spice_warned = True
    return None


class _MeteorHolder:
    """One METEOR 1.5 subprocess per Python process, started on first use, closed at exit.

    pycocoevalcap's Meteor starts its JVM in __init__ and the first score waits for the
    paraphrase table to load (seconds); later calls on the same subprocess take
    milliseconds. The lock serialises threads on the one stdin/stdout pipe; a process forked
    after start-up (a DataLoader worker) starts its own rather than share the parent's pipes.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._meteor: Meteor | None = None
        self._pid = 0
        # Instances inherited through fork. Their pipes and JVM are the parent's: they are
        # kept referenced so that their __del__ (which kills the JVM) never runs here.
        self._inherited: list[Meteor] = []

    def get(self) -> Meteor:
        with self._lock:
            return self._get()

    def _get(self) -> Meteor:
        if self._meteor is not None and self._pid != os.getpid():
            self._inherited.append(self._meteor)
            self._meteor = None
        if self._meteor is not None and self._meteor.meteor_p.poll() is not None:
            self._close()  # the JVM died (killed, out of memory): start another
        if self._meteor is None:
            self._meteor, self._pid = Meteor(), os.getpid()
        return self._meteor

    def score(self, gts: dict, res: dict) -> float:
        with self._lock:
            try:
                return float(self._get().compute_score(gts, res)[0])
            except Exception as e:
                self._close()  # a half-read pipe is out of step: start afresh next time
                raise RuntimeError(f"METEOR subprocess failed: {e!r}") from e

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        meteor, self._meteor = self._meteor, None
        if meteor is None:
            return
        if self._pid != os.getpid():
            self._inherited.append(meteor)
            return
        # Meteor.compute_score takes its own lock without try/finally; after a failure it
        # stays taken and Meteor.__del__ would block on it forever. Our lock serialises use.
        if meteor.lock.locked():
            meteor.lock.release()
        proc = meteor.meteor_p
        try:
            proc.stdin.close()
        except OSError:  # broken pipe: the JVM is gone already
            pass
        proc.kill()
        proc.wait()


_METEOR = _MeteorHolder()
atexit.register(_METEOR.close)


def _check_metrics(metrics: Iterable[str]) -> tuple[str, ...]:
    if isinstance(metrics, str):
        metrics = (metrics,)
    metrics = tuple(metrics)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown caption metrics {unknown}; choose from {list(METRICS)}")
    if not metrics:
        raise ValueError(f"no caption metrics asked for; choose from {list(METRICS)}")
    return metrics


def _check_tokenizer(tokenizer: str) -> str:
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"tokenizer must be one of {TOKENIZERS}, got {tokenizer!r}")
    return tokenizer


_spice_noted = False


def default_metrics(note: bool = True) -> tuple[str, ...]:
    """The scores a test reports when none are asked for: every one that can run here. METEOR
    and SPICE are Java programs; SPICE needs its CoreNLP models too. Without them it is left
    out with one line per process (`note`: the caller will score with these), and no advice
    to download them: only a test that names SPICE in its metrics is told how (see _spice)."""
    global _spice_noted
    if shutil.which("java") is None:
        return ("BLEU", "ROUGE-L", "CIDEr")
    if spice_available():
        return ("BLEU", "METEOR", "ROUGE-L", "CIDEr", "SPICE")
    if note and not _spice_noted:
        log.info("SPICE is not scored: its Stanford CoreNLP models are not installed here (name SPICE in the test's "
                 "metrics, e.g. model.module.test.metrics=[BLEU,METEOR,ROUGE-L,CIDEr,SPICE], to be told how to get them)")
        _spice_noted = True
    return ("BLEU", "METEOR", "ROUGE-L", "CIDEr")


class CaptionScores(PerImageMetric):
    """update(image_ids (B,), tokens (B, L), logprobs (B,)) per batch; compute() -> {"BLEU-1": ..., "CIDEr": ...}.

    metrics and tokenizer are passed to score_captions (e.g. metrics=("BLEU", "METEOR",
    "ROUGE-L", "CIDEr") at test time; METEOR costs a JVM start once per process).
    """

    FIELDS = ("tokens", "logprobs")

    def __init__(
        self,
        vocab: Vocabulary,
        references: Mapping[int, Sequence[str]] | None = None,
        metrics: Iterable[str] = ("BLEU", "CIDEr"),
        tokenizer: str = "python",
    ):
        super().__init__()
        self.vocab = vocab
        self.references = dict(references or {})
        self.metric_names = _check_metrics(metrics)  # fail at construction, not after an epoch
        self.tokenizer = _check_tokenizer(tokenizer)
        # Token rows are padded to a fixed width so every rank's tensors concatenate.
        self.width = vocab.max_len + 2
        # [{image_id, caption, logprob, BLEU-4, CIDEr}] of the last compute(), every rank's images.
        self.scored_captions: list[dict] = []

    def set_references(self, references: Mapping[int, Sequence[str]]) -> None:
        self.references = dict(references)

    def update(self, image_ids: torch.Tensor, tokens: torch.Tensor, logprobs: torch.Tensor | None = None) -> None:
        tokens = tokens[:, : self.width]
        padded = tokens.new_zeros(tokens.shape[0], self.width)
        padded[:, : tokens.shape[1]] = tokens
        if logprobs is None:
            logprobs = torch.zeros(tokens.shape[0], device=tokens.device)
        self.add_rows(image_ids, tokens=padded.long(), logprobs=logprobs.detach().double())

    def captions(self) -> list[dict]:
        """[{image_id, caption, logprob}] in image-id order, each image once; `cut: true` too for
        a caption cut at the length cap (Vocabulary.is_cut)."""
        ids, rows = self.per_image()
        return [
            {"image_id": i, "caption": self.vocab.decode(t), "logprob": float(lp),
             **({"cut": True} if self.vocab.is_cut(t) else {})}
            for i, t, lp in zip(ids, rows["tokens"].tolist(), rows["logprobs"].tolist())
        ]

    def predictions(self) -> dict[int, str]:
        """Image id -> decoded caption, one per image."""
        return {row["image_id"]: row["caption"] for row in self.captions()}

    def compute(self) -> dict[str, float]:
        """The corpus scores; each image's caption with its own scores is kept in scored_captions."""
        if not self.references:
            raise ValueError(
                "CaptionScores has no reference captions to score against: give them first, e.g. "
                "CaptioningModule.set_references(stage, datamodule.references(split)) (capgen-train and capgen-eval do)"
            )
        rows = self.captions()
        predictions = {row["image_id"]: row["caption"] for row in rows}
        scores, per_image = score_captions_per_image(predictions, self.references, metrics=self.metric_names,
                                                     tokenizer=self.tokenizer)
        # Kept here, where every rank's rows are gathered: after compute() torchmetrics gives each
        # rank back its own rows, so captions() called later would hold only this rank's share.
        self.scored_captions = [{**row, **per_image[row["image_id"]]} for row in rows]
        return scores
