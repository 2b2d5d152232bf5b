"""The decoder protocol and the two non-attention decoders (vanilla RNN, LSTM).

Every decoder speaks the same protocol so that greedy, beam and sampling decoding are
written once (capgen.models.search):
    memory = dec.prepare(feats)                 per-batch work on the image features, once
    state  = dec.init_state(memory)             initial recurrent state
    logits, state, alpha = dec.step(tokens, state, memory)   one word for every caption
    logits, alphas = dec(feats, inputs)         teacher-forced forward over whole captions
`memory` and `state` are tuples of batch-first tensors, so a beam search can expand and
reorder them with index_select(0, ...). `step` also accepts G rows of tokens and state per
row of memory (rows i G .. i G + G - 1 belong to image i): a beam search keeps one copy of
each image's memory for its K beams instead of K. Shapes: B batch, T steps, P grid cells,
D feature dims, E embedding, H hidden, V vocabulary.
"""

from __future__ import annotations

import torch
from torch import nn

Tensors = tuple[torch.Tensor, ...]


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

    def prepare(self, feats: torch.Tensor) -> Tensors:  # feats (B, P, D)
        raise NotImplementedError

    def init_state(self, memory: Tensors) -> Tensors:
        raise NotImplementedError

    def step(self, tokens: torch.Tensor, state: Tensors, memory: Tensors):
        """tokens (B,) -> logits (B, V), new state, attention (B, P) or None."""
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

    def step(self, tokens: torch.Tensor, state: Tensors, memory: Tensors):
        out, new = self.rnn(self.embed(tokens).unsqueeze(1), self._rnn_state(state))  # out (B, 1, H)
        new = new if isinstance(new, tuple) else (new,)
        logits = self.out(self.dropout(out.squeeze(1)))
        return logits, tuple(x.squeeze(0) for x in new), None

    def forward(self, feats: torch.Tensor, inputs: torch.Tensor):
        """feats (B, P, D), inputs (B, T) token ids -> logits (B, T, V), None. Steps after a
        row's last non-pad input are not run: their hidden output is zero."""
        state = self.init_state(self.prepare(feats))
        T = inputs.shape[1]
        packed = nn.utils.rnn.pack_padded_sequence(
            self.embed(inputs), input_lengths(inputs).cpu(), batch_first=True, enforce_sorted=False
        )
        out, _ = self.rnn(packed, self._rnn_state(state))
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)  # (B, T, H)
        return self.out(self.dropout(out)), None


class RNNDecoder(RecurrentDecoder):
    cell = "rnn"


class LSTMDecoder(RecurrentDecoder):
    cell = "lstm"
