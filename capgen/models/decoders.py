"""The decoder protocol and the two non-attention decoders (vanilla RNN, LSTM).

Every decoder speaks the same protocol so that greedy, beam and sampling decoding and the
training objectives are written once (capgen.models.search, scst, scheduled_sampling):
    memory = dec.prepare(feats)                 the work on each image's features, once per image
    state  = dec.init_state(memory)             initial recurrent state, one row per image
    logits, state, alpha = dec.step(tokens, state, memory, rows)   one word for every caption
    logits, alphas = dec(feats, inputs, rows, memory)   teacher-forced forward over whole captions
    hidden, alphas = dec(feats, inputs, rows, memory, words=False)   the same up to the word layer
                                                dec.out (nn.Linear), which the loss applies in pieces
`memory` and `state` are tuples of batch-first tensors. Memory stays one row per image; the
captions (rows of tokens and state) may be more, and `rows` (a Rows) says which image each
belongs to: an image's several reference captions, or its SCST samples, share its memory
and initial state instead of repeating them (`per_row` spreads the initial state). Without
`rows`, `step` takes G consecutive rows per image (rows i G .. i G + G - 1 belong to image
i, G = 1 by default): a beam search keeps one copy of each image's memory for its K beams.
`prepare` is the same in training and eval mode, so one call can serve several passes (SCST
samples, decodes its greedy baseline and scores its samples on one `memory`: the forward takes
it instead of making its own). Shapes: N images, R caption rows, T steps, P grid cells, D feature dims, E embedding,
H hidden, V vocabulary.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

Tensors = tuple[torch.Tensor, ...]


class Rows(NamedTuple):
    """Which image each caption row belongs to: row r is place slot[r] (of per_image) of
    image image[r]. Rows may be any subset of the N x per_image places, in any order (a
    teacher-forced pass sorts them by length; decoding drops the captions that ended)."""

    image: torch.Tensor  # (R,) long, the memory row of each caption row
    slot: torch.Tensor  # (R,) long, its place among its image's rows
    per_image: int  # G, the places per image

    @classmethod
    def each(cls, images: int, per_image: int, device: torch.device | str = "cpu") -> Rows:
        """per_image rows per image, image-major: row b G + j is place j of image b."""
        places = torch.arange(images * per_image, device=device)
        return cls(places // per_image, places % per_image, per_image)

    def take(self, index: torch.Tensor | slice) -> Rows:
        """The rows `index` picks (a long tensor or a slice), keeping their images and places."""
        return Rows(self.image[index], self.slot[index], self.per_image)


def per_row(tensors: Tensors, rows: Rows | None) -> Tensors:
    """Per-image tensors (N, ...) -> one row per caption (R, ...) as `rows` say (None: as they are)."""
    return tensors if rows is None else tuple(x.index_select(0, rows.image) for x in tensors)


def input_lengths(inputs: torch.Tensor) -> torch.Tensor:
    """inputs (B, T) token ids, <pad>=0 after each caption -> (B,) steps up to the last
    non-pad input: the steps the teacher-forced forward must run for each row. Later steps
    only have padding targets, which the loss ignores, so their outputs are left at zero."""
    T = inputs.shape[1]
    positions = torch.arange(1, T + 1, device=inputs.device)  # (T,)
    return ((inputs != 0) * positions).amax(dim=1)


def check_decoder_settings(dropout: float, **dims: int) -> None:
    """A decoder's sizes are positive whole numbers and its dropout a probability; checked when
    it is built, so a bad setting stops a run at start-up with its name, not deep in torch."""
    for name, value in dims.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"model.decoder.{name}={value!r}: must be a positive whole number, e.g. model.decoder.{name}=256")
    if not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"model.decoder.dropout={dropout!r}: must be a probability in [0, 1), e.g. model.decoder.dropout=0.3")


class Decoder(nn.Module):
    """Base class: subclasses define prepare / init_state / step / forward."""

    has_attention = False

    def __init__(self, vocab_size: int, feature_dim: int):
        super().__init__()
        self.vocab_size, self.feature_dim = vocab_size, feature_dim

    def prepare(self, feats: torch.Tensor) -> Tensors:  # feats (N, P, D)
        raise NotImplementedError

    def init_state(self, memory: Tensors) -> Tensors:  # -> (N, ...) per image
        raise NotImplementedError

    def step(self, tokens: torch.Tensor, state: Tensors, memory: Tensors, rows: Rows | None = None):
        """tokens (R,) -> logits (R, V), new state, attention (R, P) or None."""
        raise NotImplementedError


class RecurrentDecoder(Decoder):
    """Image feature (mean over the grid, projected) -> initial hidden state;
    word embedding -> RNN/LSTM cell -> dropout -> vocabulary logits.

    Training runs the fused nn.RNN / nn.LSTM over the whole sequence, packed so that each
    caption stops at its own length (no work on padding); `step` runs the very same module
    for one time step, so both paths share weights and numerics.
    """

    cell = "rnn"

    def __init__(self, vocab_size: int, feature_dim: int, embed_dim: int = 128, hidden_dim: int = 256, dropout: float = 0.3):
        check_decoder_settings(dropout, embed_dim=embed_dim, hidden_dim=hidden_dim)
        super().__init__(vocab_size, feature_dim)
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        rnn_cls = {"rnn": nn.RNN, "lstm": nn.LSTM}[self.cell]
        self.rnn = rnn_cls(embed_dim, hidden_dim, batch_first=True)
        n_states = 2 if self.cell == "lstm" else 1  # (h, c) or (h,)
        self.init_proj = nn.Linear(feature_dim, n_states * hidden_dim)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_dim, vocab_size)

    def prepare(self, feats: torch.Tensor) -> Tensors:
        return (feats.mean(dim=1),)  # (B, D): these decoders see the pooled image only

    def init_state(self, memory: Tensors) -> Tensors:
        return tuple(torch.tanh(self.init_proj(memory[0])).chunk(2 if self.cell == "lstm" else 1, dim=-1))

    def _rnn_state(self, state: Tensors):
        # nn.RNN/LSTM want (layers=1, B, H); our state is batch-first (B, H).
        s = tuple(x.unsqueeze(0).contiguous() for x in state)
        return s if self.cell == "lstm" else s[0]

    def step(self, tokens: torch.Tensor, state: Tensors, memory: Tensors, rows: Rows | None = None):
        # memory only sets the initial state: the step is the same whatever image a row belongs to
        out, new = self.rnn(self.embed(tokens).unsqueeze(1), self._rnn_state(state))  # out (B, 1, H)
        new = new if isinstance(new, tuple) else (new,)
        logits = self.out(self.dropout(out.squeeze(1)))
        return logits, tuple(x.squeeze(0) for x in new), None

    def forward(self, feats: torch.Tensor, inputs: torch.Tensor, rows: Rows | None = None, memory: Tensors | None = None,
                words: bool = True):
        """feats (N, P, D), inputs (R, T) token ids, rows: the image of each caption (None:
        caption b of image b), memory: prepare(feats) if made already -> logits (R, T, V),
        None; words=False: the word layer's input (R, T, H) in place of the logits. Steps
        after a row's last non-pad input are not run: their hidden output is zero."""
        memory = self.prepare(feats) if memory is None else memory
        state = per_row(self.init_state(memory), rows)  # (R, H) each
        T = inputs.shape[1]
        packed = nn.utils.rnn.pack_padded_sequence(
            self.embed(inputs), input_lengths(inputs).cpu(), batch_first=True, enforce_sorted=False
        )
        out, _ = self.rnn(packed, self._rnn_state(state))
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)  # (B, T, H)
        word_input = self.dropout(out)
        return (self.out(word_input) if words else word_input), None


class RNNDecoder(RecurrentDecoder):
    cell = "rnn"


class LSTMDecoder(RecurrentDecoder):
    cell = "lstm"
