"""Decoding, in one place: `decode(decoder, feats, settings, ...)` runs what a DecodeSettings
asks for, and the algorithms it dispatches to are importable from here. Each is written once
against the decoder protocol (see capgen.models.decoders):

    settings.py     DecodeSettings: every control, checked
    constraints.py  words a caption may not emit next (min length, repeated n-grams, <unk>)
    stepwise.py     greedy and sampling (temperature, top-k, top-p), one caption per row
    beam.py         batched beam search: n best per image, diverse beam
    results.py      DecodeResult (one caption per image), NBestResult (N per image)

Shapes: B images, N captions per image, L steps, P cells.

All methods share three rules. A caption has at most `max_len` words: either up to max_len
words then <end> (finished), or exactly max_len words when the decoder never ended it
(unfinished). <pad> (id 0) and <start> are never emitted: the model is never trained to
predict them, so their logits are set to -inf and the log-probabilities are those of the
words that can be emitted. Constraints (min length, no repeated n-gram, no <unk>) only
restrict which words may be chosen: the log-probabilities recorded stay the model's own."""

from __future__ import annotations

import torch

from ..decoders import Decoder
from .beam import beam_search
from .constraints import Constraints
from .results import PAD_ID, DecodeResult, NBestResult, first_captions
from .settings import DecodeSettings
from .stepwise import greedy, sample

__all__ = ["PAD_ID", "Constraints", "DecodeResult", "DecodeSettings", "NBestResult", "beam_search", "decode",
           "first_captions", "greedy", "sample"]


def decode(
    decoder: Decoder,
    feats: torch.Tensor,
    settings: DecodeSettings,
    start_id: int,
    end_id: int,
    unk_id: int,
    max_len: int | None = None,
    generator: torch.Generator | None = None,
) -> DecodeResult | NBestResult:
    """Captions for features feats (B, P, D) as `settings` say: a DecodeResult (B, L) for
    n_best=1, else an NBestResult (B, N, L) (best first for the beam methods, in draw order
    for sampling).

    max_len: the words per caption when settings.max_len is null (the vocabulary's).
    generator: where sampling draws from (on feats' device), so that the draws of a whole
    evaluation come from one stream; without one, a generator seeded with settings.seed.
    """
    s = settings
    words = s.max_len if s.max_len is not None else max_len
    if words is None:
        raise ValueError("decode.max_len is null and no default max_len was given: give the vocabulary's max_len")
    constraints = Constraints.make(end_id, s.min_len, s.no_repeat_ngram_size, (unk_id,) if s.suppress_unk else ())
    if s.method == "greedy":
        return greedy(decoder, feats, words, start_id, end_id, constraints=constraints)
    if s.method == "sample":
        if generator is None:
            generator = torch.Generator(device=feats.device).manual_seed(s.seed)
        result = sample(decoder, feats, words, start_id, end_id, s.temperature, s.top_k or None, generator,
                        top_p=s.top_p, n=s.n_best, constraints=constraints)
        return result if s.n_best == 1 else NBestResult.from_rows(result, s.n_best)
    diverse = s.method == "diverse_beam"
    return beam_search(decoder, feats, s.beam_size, words, start_id, end_id, s.length_penalty, n_best=s.n_best,
                       groups=s.groups if diverse else 1, diversity_strength=s.diversity_strength if diverse else 0.0,
                       constraints=constraints)
