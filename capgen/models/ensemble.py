"""Test-time ensembles: several captioners over one vocabulary decoded as one.

`Ensemble(members)` is a Captioner whose decoder, an `EnsembleDecoder`, speaks the decoder
protocol (capgen.models.decoders), so every decoding method (capgen.models.search: greedy,
beam, n-best, diverse beam, sampling, the constraints) and the teacher-forced loss run on it
unchanged, and so does any decoder added later. Members may differ in encoder and decoder
(an LSTM and an attention model trained on the same data): each encodes the image with its
own encoder and decodes with its own decoder.

The distribution. At every step member m gives log-probabilities log p_m(w) = log_softmax
of its logits. The ensemble's step returns their mean as its logits,
    s(w) = (1/M) sum_m log p_m(w),
and a decoding method takes log_softmax of logits after setting <pad> and <start> to -inf
(capgen.models.search), so the words are chosen, scored and recorded by
    log p(w) = s(w) - log sum_v exp s(v),   v over the words a caption may emit,
the normalised geometric mean of the members' distributions (a product of experts with
weights 1/M). A member's own distribution over the emittable words differs from its
log_softmax over the whole vocabulary only by a constant per row, which the normalisation
removes: p is exactly the geometric mean of the members' distributions as each decodes alone.
The log-probabilities an ensemble records (logprob, token_logprobs) are those of p; the
teacher-forced forward returns the same mean (R, T, V), so a loss on it (cross-entropy over
the whole vocabulary, as a single model's on its logits) scores exp s renormalised.
An ensemble of one member is that member: its features, logits and attention pass through
untouched, so it gives the same captions and scores, bit for bit, as the member alone.

Features. Members' grids differ (P_m cells of D_m dims), but a decoding method takes one
features tensor (B, P, D). The ensemble's features are one cell per image holding every
member's grid, flattened and concatenated in member order: (B, 1, sum_m P_m D_m); its
decoder's `prepare` cuts them apart. Memory and state are the members' tuples concatenated
in member order (flat tuples of batch-first tensors, as the protocol has them, so a search
selects and reorders their rows as it does a single decoder's).

Attention (figures, the grounding score): the mean of the maps of the members that attend,
when they attend over grids of the same size; otherwise (none attends, or their grids differ)
the ensemble has no attention.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .captioner import Captioner
from .decoders import Decoder, Rows, Tensors


class EnsembleDecoder(Decoder):
    """The decoders of an ensemble as one decoder (see the module docstring).

    decoders: the members' decoders, over one vocabulary. shapes: each member's (P_m, D_m),
    the cells and dims of its features. attending: the members whose attention maps are
    averaged (all of the same P); empty: the ensemble has no attention.
    """

    def __init__(self, decoders: Sequence[Decoder], shapes: Sequence[tuple[int, int]], attending: Sequence[int] = ()):
        if not decoders:
            raise ValueError("an ensemble needs at least one member")
        sizes = {d.vocab_size for d in decoders}
        if len(sizes) != 1:
            raise ValueError(f"an ensemble's members share one vocabulary; their vocabulary sizes are "
                             f"{[d.vocab_size for d in decoders]}")
        if len(shapes) != len(decoders):
            raise ValueError(f"{len(shapes)} feature shapes for {len(decoders)} decoders")
        super().__init__(sizes.pop(), sum(p * d for p, d in shapes))
        self.decoders = nn.ModuleList(decoders)
        self.shapes = [tuple(s) for s in shapes]
        self.attending = tuple(attending)
        cells = {shapes[k][0] for k in self.attending}
        if len(cells) > 1:
            raise ValueError(f"the attending members {list(self.attending)} attend over different numbers of cells "
                             f"{sorted(cells)}, whose maps cannot be averaged: name only members of one grid")
        self.has_attention = bool(self.attending)
        # How many tensors each member's memory and state tuple holds: a decoder's are always
        # the same number (the protocol's fixed tuples), learnt from its prepare / init_state.
        self._memory_sizes: list[int] | None = None
        self._state_sizes: list[int] | None = None

    # ----- the flat tuples -----------------------------------------------------------------
    def unpack(self, feats: torch.Tensor) -> list[torch.Tensor]:
        """The ensemble's features (B, 1, S) -> each member's (B, P_m, D_m), in its decoder's dtype."""
        if len(self.decoders) == 1 and tuple(feats.shape[1:]) == self.shapes[0]:
            return [feats]  # one member: its own features, as they are
        B = feats.shape[0]
        widths = [p * d for p, d in self.shapes]
        if feats.ndim != 3 or feats.shape[1] != 1 or feats.shape[2] != sum(widths):
            raise ValueError(f"an ensemble's features are (B, 1, {sum(widths)}), every member's grid in one cell "
                             f"(Ensemble.encode makes them); got {tuple(feats.shape)}")
        parts = feats[:, 0].split(widths, dim=1)
        return [x.reshape(B, p, d).to(_dtype(dec, feats.dtype))
                for x, (p, d), dec in zip(parts, self.shapes, self.decoders)]

    @staticmethod
    def _split(tensors: Tensors, sizes: list[int] | None, what: str) -> list[Tensors]:
        if sizes is None or len(tensors) != sum(sizes):
            raise ValueError(f"this {what} is not the ensemble's own (its members' tuples concatenated): "
                             f"{len(tensors)} tensors")
        out, start = [], 0
        for n in sizes:
            out.append(tuple(tensors[start : start + n]))
            start += n
        return out

    # ----- the protocol --------------------------------------------------------------------
    def prepare(self, feats: torch.Tensor) -> Tensors:
        memories = [dec.prepare(f) for dec, f in zip(self.decoders, self.unpack(feats))]
        self._memory_sizes = [len(m) for m in memories]
        return tuple(x for m in memories for x in m)

    def init_state(self, memory: Tensors) -> Tensors:
        states = [dec.init_state(m) for dec, m in zip(self.decoders, self._split(memory, self._memory_sizes, "memory"))]
        self._state_sizes = [len(s) for s in states]
        return tuple(x for s in states for x in s)

    def step(self, tokens: torch.Tensor, state: Tensors, memory: Tensors, rows: Rows | None = None):
        """tokens (R,) -> the mean of the members' log-probabilities (R, V) as logits, the
        members' new states concatenated, the mean attention (R, P) or None."""
        memories = self._split(memory, self._memory_sizes, "memory")
        states = self._split(state, self._state_sizes, "state")
        logits, new_states, alphas = [], [], []
        for k, (dec, m, s) in enumerate(zip(self.decoders, memories, states)):
            out, new, alpha = dec.step(tokens, s, m, rows)
            if len(new) != len(s):
                raise ValueError(f"member {k}'s decoder ({type(dec).__name__}) returned a state of {len(new)} tensors "
                                 f"for one of {len(s)}: an ensemble needs each state to keep its number of tensors")
            logits.append(out)
            new_states.append(new)
            if k in self.attending:
                alphas.append(alpha)
        alpha = torch.stack(alphas).mean(0) if alphas else None
        return self._mean(logits), tuple(x for s in new_states for x in s), alpha

    def forward(self, feats: torch.Tensor, inputs: torch.Tensor, rows: Rows | None = None, memory: Tensors | None = None,
                words: bool = True):
        """Teacher forcing: feats (N, 1, S), inputs (R, T) -> the mean of the members'
        log-probabilities (R, T, V), the mean attention (R, T, P) or None."""
        if not words:
            raise ValueError("an ensemble has no single word layer: call it with words=True (it is for decoding "
                             "and scoring, not for training)")
        member_feats = self.unpack(feats)
        memories = (self._split(memory, self._memory_sizes, "memory") if memory is not None
                    else [None] * len(self.decoders))
        logits, alphas = [], []
        for k, (dec, f, m) in enumerate(zip(self.decoders, member_feats, memories)):
            out, alpha = dec(f, inputs, rows, m)
            logits.append(out)
            if k in self.attending:
                alphas.append(alpha)
        return self._mean(logits), (torch.stack(alphas).mean(0) if alphas else None)

    def _mean(self, logits: list[torch.Tensor]) -> torch.Tensor:
        """The members' logits (..., V) -> the mean of their log_softmax, at least float32;
        one member's logits as they are."""
        if len(logits) == 1:
            return logits[0]
        dtype = torch.promote_types(logits[0].dtype, torch.float32)
        return torch.stack([x.to(dtype).log_softmax(dim=-1) for x in logits]).mean(0)


def _dtype(module: nn.Module, default: torch.dtype) -> torch.dtype:
    param = next(module.parameters(), None)
    return param.dtype if param is not None else default


class Ensemble(Captioner):
    """Captioners over one vocabulary decoded as one (see the module docstring); `decode`,
    `generate` and the teacher-forced `forward` are the Captioner's, run on the ensemble's
    packed features and its EnsembleDecoder. `members` keep their order: it is the order of
    the features, memory and state, not a weighting (every member weighs 1/M)."""

    def __init__(self, members: Sequence[Captioner]):
        nn.Module.__init__(self)
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        attending = [k for k, m in enumerate(members) if m.has_attention]
        grids = {members[k].grid for k in attending}
        # Why the ensemble has no attention although members attend (None: it has, or none attends).
        self.attention_note = None
        if len(grids) > 1:
            self.attention_note = (f"the attending members attend over grids of different sizes "
                                   f"({', '.join(f'{g}x{g}' for g in sorted(grids))}), which cannot be averaged")
            attending = []
        shapes = [(m.grid**2, m.decoder.feature_dim) for m in members]
        self.decoder = EnsembleDecoder([m.decoder for m in members], shapes, attending)
        self._grid = members[attending[0]].grid if attending else members[0].grid

    @property
    def grid(self) -> int:
        """The side of the attention maps' grid (of the attending members)."""
        return self._grid

    def use_torch_compile(self) -> None:
        for m in self.members:
            m.use_torch_compile()

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images (B, 3, H, W) -> every member's features in one cell (B, 1, S), each
        member's by its own encoder. Cached features of one encoder cannot serve the others."""
        if len(self.members) == 1:
            return self.members[0].encode(images)  # one member: its own features (B, P, D), as they are
        if images.is_floating_point() and images.ndim == 3:
            raise ValueError("an ensemble encodes images with each member's own encoder; it was given features of one "
                             "encoder (a feature cache): give images (data.use_features=false)")
        parts = [m.encode(images) for m in self.members]  # (B, P_m, D_m) each
        for k, (p, shape) in enumerate(zip(parts, self.decoder.shapes)):
            if tuple(p.shape[1:]) != shape:
                raise ValueError(f"member {k}'s encoder gave features of {tuple(p.shape[1:])} (cells, dims), not the "
                                 f"{shape} of its grid ({self.members[k].grid}x{self.members[k].grid}) and decoder")
        dtype = parts[0].dtype
        for p in parts[1:]:
            dtype = torch.promote_types(dtype, p.dtype)
        return torch.cat([p.flatten(1).to(dtype) for p in parts], dim=1).unsqueeze(1)
