"""A trained module outside a Trainer, as capgen-eval, capgen-caption and capgen-demo use it: the
checkpoint's module on a device, or the test-time ensemble of several checkpoints as one
module (`load_checkpoints`), and one image of a decoded batch as a captions.jsonl row.

Ensembles. `ckpt_path=[a.ckpt,b.ckpt,...]` (Hydra's list syntax) names the members of an
ensemble (capgen.models.ensemble: each member encodes the image with its own encoder, and
every decoding method decodes the normalised geometric mean of their word distributions).
The module is the first checkpoint's, with its network replaced by the Ensemble: its
vocabulary, tokenizer, test decode and training data are the first member's, so the order
of the list says whose run settings are used, not how the members weigh (equally). Refused,
each in one paragraph naming the files: checkpoints whose vocabularies differ, the same
checkpoint given twice (it would weigh double), an empty list. A missing file or one that is
not a capgen checkpoint is named as `ckpt_path[i]=<file>` (i counting from 0). A list of one,
`ckpt_path=[a.ckpt]`, is the checkpoint itself: the same module as `ckpt_path=a.ckpt`.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from omegaconf import ListConfig

from ..models.ensemble import Ensemble
from ..models.search import DecodeResult, NBestResult, first_captions
from .hardware import configure_encoder
from .module import CaptioningModule


def load_module(path: str, device: str = "cpu", encoder: dict | None = None, setting: str = "ckpt_path") -> CaptioningModule:
    """The checkpoint's module in eval mode on `device`, its encoder run as the command's
    `encoder` settings (capgen.lightning.hardware.encoder_settings; None: their defaults) ask:
    memory format and precision. Errors name `setting`=the file and the fix."""
    if not path:
        raise ValueError(f"{setting} is not set: give {setting}=<run dir>/checkpoints/<name>.ckpt")
    module = CaptioningModule.from_checkpoint(str(path), setting)
    configure_encoder(module.net.encoder, device_type=torch.device(device).type, **(encoder or {}))
    return module.to(device).eval()


def checkpoint_list(value, setting: str = "ckpt_path") -> list[str]:
    """The checkpoint files a command's `setting` names: one path, or a list of them (an
    ensemble, in the order given). Errors say what was given and the fix."""
    example = f"{setting}=a.ckpt, or an ensemble: {setting}=[a.ckpt,b.ckpt]"
    if isinstance(value, str | os.PathLike):
        if not str(value):
            raise ValueError(f"{setting} is not set: give {example}")
        return [str(value)]
    if isinstance(value, list | tuple | ListConfig):
        items = list(value)
        if not items:
            raise ValueError(f"{setting}=[]: an empty list names no checkpoint; give {example}")
        for i, item in enumerate(items):
            if not isinstance(item, str | os.PathLike) or not str(item):
                raise ValueError(f"{setting}[{i}]={item!r}: each member of an ensemble is one checkpoint file; give {example}")
        return [str(item) for item in items]
    if value is None:
        raise ValueError(f"{setting} is not set: give {example}")
    raise ValueError(f"{setting}={value!r}: give {example}")


def check_distinct(paths: Sequence[str], setting: str = "ckpt_path") -> None:
    """Refuse a checkpoint named twice in an ensemble (also by another path to the same file)."""
    seen: dict[Path, int] = {}
    for i, path in enumerate(paths):
        key = Path(path).expanduser().resolve()
        if key in seen:
            j = seen[key]
            same = "" if str(paths[j]) == str(path) else f" (the same file as {setting}[{j}]={paths[j]})"
            # Each file once, by the first path naming it; no spaces, so that the list is one shell word.
            once = {Path(p).expanduser().resolve(): str(p) for p in reversed(paths)}
            kept = ",".join(once[k] for k in dict.fromkeys(Path(p).expanduser().resolve() for p in paths))
            raise ValueError(
                f"{setting}[{i}]={path}{same}: this checkpoint is in the ensemble already as {setting}[{j}]; members are "
                f"averaged with equal weights, so a repeated one would count double. Give each checkpoint once: "
                f"{shlex.quote(f'{setting}=[{kept}]')}"
            )
        seen[key] = i


def vocabulary_difference(a, b) -> str:
    """How two vocabularies differ, in words: size, first differing id, max_len."""
    parts = []
    if a.itos != b.itos:
        first = next((i for i, (x, y) in enumerate(zip(a.itos, b.itos)) if x != y), min(len(a), len(b)))
        at = (f"first differing at id {first} ({a.itos[first]!r} vs {b.itos[first]!r})"
              if first < min(len(a), len(b)) else f"the same up to id {first - 1}")
        parts.append(f"{len(a)} vs {len(b)} words, {at}")
    if a.max_len != b.max_len:
        parts.append(f"max_len {a.max_len} vs {b.max_len}")
    return "; ".join(parts)


def load_checkpoints(value, device: str = "cpu", encoder: dict | None = None,
                     setting: str = "ckpt_path") -> CaptioningModule:
    """The module for `value` (a path, or a list of paths: see the module docstring), in eval
    mode on `device`. One checkpoint: load_module's module itself."""
    paths = checkpoint_list(value, setting)
    if len(paths) == 1:
        return load_module(paths[0], device, encoder, setting)
    check_distinct(paths, setting)
    modules = [load_module(p, device, encoder, f"{setting}[{i}]") for i, p in enumerate(paths)]
    first = modules[0]
    for i, m in enumerate(modules[1:], start=1):
        if m.vocab != first.vocab:
            raise ValueError(
                f"{setting}[0]={paths[0]} and {setting}[{i}]={paths[i]} have different vocabularies "
                f"({vocabulary_difference(first.vocab, m.vocab)}), and an ensemble averages its members' "
                f"log-probabilities word by word, so every member must have the same words at the same ids and "
                f"the same max_len. Ensemble checkpoints trained on the same data with the same vocabulary settings "
                f"(data.min_freq, data.max_len), or evaluate them one at a time."
            )
    first.net = Ensemble([m.net for m in modules]).to(device).eval()
    first.members_trained_on = tuple(m.trained_on for m in modules)  # e.g. each one's training image size
    return first


def resolve_device(device: str) -> str:
    """`device` (auto, cpu, cuda, cuda:N, ...) as a torch device name, checked here."""
    if not isinstance(device, str):
        raise ValueError(f"device={device!r}: give auto, cpu, cuda or cuda:N")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device}: no CUDA device is available here; use device=cpu")
    try:
        torch.device(device)
    except RuntimeError:
        raise ValueError(f"device={device}: not a device torch knows; give auto, cpu, cuda or cuda:N") from None
    return device


def caption_row(vocab, every: DecodeResult | NBestResult, k: int) -> tuple[dict, torch.Tensor | None]:
    """Image k of a decoded batch as a captions.jsonl row has it, less its path: {caption,
    words, word_probs, logprob} of its first caption, plus {captions, logprobs} (all n_best,
    best first; an empty place: no caption, logprob None) for an n-best result. Also the
    first caption's attention (L, P), row l for word l, on the CPU; None without attention."""
    result = first_captions(every)
    steps, words = _words(vocab, result.tokens[k].tolist())
    probs = [float(result.token_logprobs[k, t].exp()) for t in steps]
    row = {"caption": " ".join(words), "words": words, "word_probs": probs, "logprob": float(result.logprob[k])}
    if vocab.is_cut(result.tokens[k].tolist()):
        row["cut"] = True  # cut at the length cap: shown marked (capgen.vocab.shown)
    if isinstance(every, NBestResult):
        logprobs = [float(lp) for lp in every.logprob[k]]
        row.update(captions=[" ".join(_words(vocab, t)[1]) for t in every.tokens[k].tolist()],
                   logprobs=[lp if np.isfinite(lp) else None for lp in logprobs])
        cut = [j for j, t in enumerate(every.tokens[k].tolist()) if vocab.is_cut(t)]
        if cut:
            row["cut_captions"] = cut  # the places in `captions` cut at the length cap
    alphas = result.alphas[k, steps].cpu() if result.alphas is not None else None
    return row, alphas


def _words(vocab, tokens: list[int]) -> tuple[list[int], list[str]]:
    """The steps that emitted a word of a caption's tokens (words, <end>, then <pad>), and
    those words (a stray <pad>/<start> from a weak model is not one)."""
    n = tokens.index(vocab.end_id) if vocab.end_id in tokens else len(tokens)
    steps = [t for t in range(n) if tokens[t] not in (vocab.pad_id, vocab.start_id)]
    return steps, [vocab.itos[tokens[t]] for t in steps]
