"""Vocabulary: word <-> id, with the special tokens at fixed ids, saved as JSON."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from .tokenizer import tokenize

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNK)  # ids 0, 1, 2, 3


class Vocabulary:
    """Word <-> id mapping with `<pad>`=0, `<start>`=1, `<end>`=2, `<unk>`=3.

    The special tokens are ids, not words: `stoi` maps caption words to ids >= 4 only, so a
    caption that says "<end>" or "<unk>" as text (the tokenizer keeps them whole) reads them
    as ordinary words, kept when frequent enough and `<unk>` otherwise; only the framing
    ever gives `<start>`/`<end>` and nothing gives `<pad>`. A kept word may therefore share
    its text with a special token ("<unk>" at id 3 and at, say, id 57).
    """

    def __init__(self, words: Sequence[str], max_len: int = 20):
        words = list(words)
        if tuple(words[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"vocabulary must start with {SPECIALS}, got {words[:4]}")
        if len(set(words[len(SPECIALS):])) != len(words) - len(SPECIALS):
            raise ValueError("vocabulary has duplicate words")
        self.itos = words
        self.stoi = {w: i for i, w in enumerate(words) if i >= len(SPECIALS)}
        self.max_len = max_len  # words per caption, not counting <start>/<end>

    pad_id, start_id, end_id, unk_id = 0, 1, 2, 3

    @classmethod
    def build(cls, captions: Iterable[str], min_freq: int = 1, max_len: int = 20) -> Vocabulary:
        """Words seen at least `min_freq` times, most frequent first (ties alphabetical)."""
        counts = Counter(w for c in captions for w in tokenize(c)[:max_len])
        kept = sorted((w for w, n in counts.items() if n >= min_freq), key=lambda w: (-counts[w], w))
        return cls(list(SPECIALS) + kept, max_len=max_len)

    def __len__(self) -> int:
        return len(self.itos)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.itos == other.itos and self.max_len == other.max_len

    def encode(self, caption: str) -> list[int]:
        """`<start>` + first `max_len` word ids (unknown -> `<unk>`) + `<end>`."""
        ids = [self.stoi.get(w, self.unk_id) for w in tokenize(caption)[: self.max_len]]
        return [self.start_id, *ids, self.end_id]

    def decode(self, ids: Iterable[int]) -> str:
        """Words up to the first `<end>`, skipping `<start>`/`<pad>`."""
        return " ".join(self.decode_words(ids))

    def decode_words(self, ids: Iterable[int]) -> list[str]:
        words = []
        for i in ids:
            i = int(i)
            if i == self.end_id:
                break
            if i in (self.pad_id, self.start_id):
                continue
            words.append(self.itos[i])
        return words

    def to_dict(self) -> dict:
        return {"words": self.itos, "max_len": self.max_len}

    @classmethod
    def from_dict(cls, d: dict) -> Vocabulary:
        return cls(d["words"], max_len=d["max_len"])

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=0))

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (KeyError, json.JSONDecodeError) as e:
            raise ValueError(
                f"{path}: not a capgen vocabulary file ({e!r}); expected JSON with 'words' and "
                "'max_len' as written by Vocabulary.save"
            ) from e
