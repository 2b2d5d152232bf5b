"""Words a caption may not emit next: <end> before `min_len` words, any word that would
repeat an n-gram already in the caption, and banned ids (<unk> when suppressed).

Every decoding method applies them the same way, to the scores it chooses from: a blocked
word gets -inf, so it is never chosen, and the log-probabilities recorded for the chosen
words stay the model's own (a constraint restricts the search, it does not rescale it).
Shapes: R caption rows, t words so far, V vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Constraints:
    end_id: int
    min_len: int = 0  # words before <end> may be emitted
    no_repeat_ngram_size: int = 0  # n > 0: no n-gram twice in a caption
    banned: tuple[int, ...] = ()  # ids never emitted

    @classmethod
    def make(cls, end_id: int, min_len: int = 0, no_repeat_ngram_size: int = 0, banned: tuple[int, ...] = ()):
        """The constraints, or None when there are none (decoding then takes its plain path)."""
        if min_len == 0 and no_repeat_ngram_size == 0 and not banned:
            return None
        return cls(end_id, min_len, no_repeat_ngram_size, banned)

    def apply(self, scores: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """scores (R, V) float (-inf for what is never emitted), history (R, t) the words each
        row has emitted so far -> scores with the blocked words at -inf.

        A row left with no word at all (every one blocked, e.g. a tiny vocabulary under
        n-gram blocking) may still end: its <end> keeps its score, so no caption is stuck."""
        t = history.shape[1]
        blocked = torch.zeros_like(scores, dtype=torch.bool)
        if self.banned:
            blocked[:, list(self.banned)] = True
        if t < self.min_len:
            blocked[:, self.end_id] = True
        n = self.no_repeat_ngram_size
        if n and t >= n:
            blocked |= repeated_ngram_ends(history, n, scores.shape[1])
        out = scores.masked_fill(blocked, -math.inf)
        stuck = (out == -math.inf).all(dim=1)  # (R,)
        if stuck.any():
            out[stuck, self.end_id] = scores[stuck, self.end_id]
        return out


def repeated_ngram_ends(history: torch.Tensor, n: int, vocab_size: int) -> torch.Tensor:
    """history (R, t), t >= n -> (R, V) bool: the words that, emitted next, would complete an
    n-gram the row already holds (those following an earlier occurrence of its last n-1
    words; for n = 1 every word it has emitted)."""
    R, t = history.shape
    windows = history.unfold(1, n, 1)  # (R, W, n), W = t - n + 1: every n-gram so far
    prefix = history[:, t - n + 1 :]  # (R, n-1): the row's last n-1 words
    match = (windows[:, :, :-1] == prefix.unsqueeze(1)).all(dim=-1)  # (R, W)
    # The word ending each matching n-gram; a non-match writes into a spare column V.
    ends = windows[:, :, -1].masked_fill(~match, vocab_size)  # (R, W)
    blocked = torch.zeros(R, vocab_size + 1, dtype=torch.bool, device=history.device)
    blocked.scatter_(1, ends, True)
    return blocked[:, :vocab_size]
