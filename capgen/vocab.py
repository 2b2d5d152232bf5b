"""Vocabulary: word <-> id, with the special tokens at fixed ids, saved as JSON."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from .atomic import write_atomically
from .tokenizer import tokenize

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNK)  # ids 0, 1, 2, 3

_SAVED_FIX = "expected JSON with 'words' and 'max_len' as Vocabulary.save writes it; save the vocabulary again"


CUT_MARK = "… (cut at the length cap)"  # after a caption the decoder had not ended


def shown(caption: str, cut: bool) -> str:
    """A caption as the commands show it: marked when it was cut at the length cap."""
    return f"{caption} {CUT_MARK}" if cut else caption


class Vocabulary:
    """Word <-> id mapping with `<pad>`=0, `<start>`=1, `<end>`=2, `<unk>`=3.

    The special tokens are ids, not words: `stoi` maps caption words to ids >= 4 only, so a
    caption that says "<end>" or "<unk>" as text (the tokenizer keeps them whole) reads them
    as ordinary words, kept when frequent enough and `<unk>` otherwise; only the framing
    ever gives `<start>`/`<end>` and nothing gives `<pad>`. A kept word may therefore share
    its text with a special token ("<unk>" at id 3 and at, say, id 57).
    """

    def __init__(self, words: Sequence[str], max_len: int = 20):
        _check(words, max_len)
        self.itos = list(words)
        self.stoi = {w: i for i, w in enumerate(self.itos) if i >= len(SPECIALS)}
        self.max_len = max_len  # words per caption, not counting <start>/<end>

    pad_id, start_id, end_id, unk_id = 0, 1, 2, 3

    @classmethod
    def build(cls, captions: Iterable[str], min_freq: int = 1, max_len: int = 20) -> Vocabulary:
        """Words seen at least `min_freq` times, most frequent first (ties alphabetical)."""
        counts: Counter[str] = Counter()
        for c in captions:
            counts.update(tokenize(c)[:max_len])  # counted in C, a caption at a time
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

    def is_cut(self, ids: Iterable[int]) -> bool:
        """Whether a decoded caption was cut at the length cap: words, and no `<end>` among them
        (the decoder had not ended it when it reached max_len words)."""
        ids = [int(i) for i in ids]
        return self.end_id not in ids and any(i not in (self.pad_id, self.start_id) for i in ids)

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
    def from_dict(cls, d: dict, source: str = "vocabulary", fix: str = _SAVED_FIX) -> Vocabulary:
        """The vocabulary `to_dict` gave; an inconsistent one raises a ValueError that names
        `source` (the file, or setting=file, it came from) and `fix`."""
        try:
            if not isinstance(d, dict) or not {"words", "max_len"} <= d.keys():
                got = sorted(map(str, d)) if isinstance(d, dict) else type(d).__name__
                raise ValueError(f"it needs the keys 'words' and 'max_len', got {got}")
            return cls(d["words"], max_len=d["max_len"])
        except ValueError as e:  # raised above or by _check: the problem alone, without `source`
            raise ValueError(f"{source}: not a consistent capgen vocabulary: {e}; {fix}") from None

    def save(self, path: str | Path) -> None:
        """Written whole or not at all (capgen.atomic): a run killed while saving keeps its file readable."""
        write_atomically(Path(path), json.dumps(self.to_dict(), indent=0).encode())

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        try:
            saved = json.loads(Path(path).read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not a capgen vocabulary file ({e}); {_SAVED_FIX}") from e
        return cls.from_dict(saved, source=str(path))


def _check(words: Sequence[str], max_len: int) -> None:
    """ValueError saying what makes (words, max_len) no vocabulary: ids are positions in
    `words`, so a repeated word or a misplaced special would silently shift or merge them."""
    if not isinstance(words, (list, tuple)):
        raise ValueError(f"'words' must be a list of strings, got {type(words).__name__}")
    not_str = [(i, w) for i, w in enumerate(words) if not isinstance(w, str)]
    if not_str:
        i, w = not_str[0]
        raise ValueError(f"'words' must all be strings, but id {i} is {w!r} ({type(w).__name__})")
    if tuple(words[: len(SPECIALS)]) != SPECIALS:
        raise ValueError(f"'words' must start with {SPECIALS} (ids 0-3), got {list(words[:len(SPECIALS)])}")
    first: dict[str, int] = {}
    for i, w in enumerate(words[len(SPECIALS):], start=len(SPECIALS)):
        if w in first:
            raise ValueError(f"'words' has {w!r} twice (ids {first[w]} and {i}); each word must have one id")
        first[w] = i
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
        raise ValueError(f"'max_len' (words per caption) must be a positive whole number, got {max_len!r}")
