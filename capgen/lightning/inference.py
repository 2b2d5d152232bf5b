"""A trained module outside a Trainer, as capgen-eval, capgen-caption and capgen-demo use it: the
checkpoint's module on a device, and one image of a decoded batch as a captions.jsonl row."""

from __future__ import annotations

import numpy as np
import torch

from ..models.search import DecodeResult, NBestResult, first_captions
from .hardware import configure_encoder
from .module import CaptioningModule


def load_module(path: str, device: str = "cpu", encoder: dict | None = None) -> CaptioningModule:
    """The checkpoint's module in eval mode on `device`, its encoder run as the command's
    `encoder` settings (capgen.lightning.hardware.encoder_settings; None: their defaults) ask:
    memory format and precision. Errors name the file and the fix."""
    if not path:
        raise ValueError("ckpt_path is not set: give ckpt_path=<run dir>/checkpoints/<name>.ckpt")
    module = CaptioningModule.from_checkpoint(str(path))
    configure_encoder(module.net.encoder, device_type=torch.device(device).type, **(encoder or {}))
    return module.to(device).eval()


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
