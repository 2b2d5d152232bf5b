"""Corpus statistics of a captioner's output, one caption per image: how many words it uses,
how long its captions are, how often it repeats itself and how often it only repeats the
training captions.

Captions are compared as the scorers see them: tokenized like the official evaluation
(capgen.metrics.captions.tokenize_captions: lower-cased PTB tokens, punctuation removed), so
"A dog." and "a dog" are the same caption of two words.

    vocabulary      distinct words over all captions
    mean_length     words per caption
    unique_percent  distinct captions / captions, in %
    novel_percent   captions that are not, word for word, one of the training references, in %
                    (None without the training references)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .captions import tokenize_captions


def caption_statistics(
    captions: Sequence[str], training_references: Iterable[str] | None = None, tokenizer: str = "python"
) -> dict[str, float | int | None]:
    """{"vocabulary", "mean_length", "unique_percent", "novel_percent"} of `captions` (one per
    image); `training_references` are every reference caption of the training split, flat."""
    if not captions:
        raise ValueError("no captions to describe")
    tokens = tokenize_captions(list(captions), tokenizer)
    texts = [" ".join(t) for t in tokens]
    novel = None
    if training_references is not None:
        seen = {" ".join(t) for t in tokenize_captions(list(training_references), tokenizer)}
        novel = 100.0 * sum(t not in seen for t in texts) / len(texts)
    return {
        "vocabulary": len({w for t in tokens for w in t}),
        "mean_length": sum(map(len, tokens)) / len(tokens),
        "unique_percent": 100.0 * len(set(texts)) / len(texts),
        "novel_percent": novel,
    }
