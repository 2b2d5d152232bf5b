"""Soft-attention LSTM decoder ("Show, Attend and Tell", Xu et al. 2015).

At step t, with h = h_{t-1}:
    e_p     = w . tanh(U f_p + W h) + b       additive attention over the P grid cells
    alpha   = softmax_p(e)                    where to look, (B, P)
    z       = sigmoid(f_beta h) * sum_p alpha_p f_p     gated context, (B, D)
    h, c    = LSTM([E y_{t-1}; z], (h, c))
    logits  = L_o dropout(E y_{t-1} + L_h h + L_z z)       the paper's deep output (eq. 7)
The deep output gives the word emitted at step t a direct path from where the model looks
at step t, which keeps the attention on the object being named rather than on the next.
h0 and c0 come from the mean feature. U f_p does not depend on t, so `prepare` computes it
once per image, and every caption of an image (its references in training, its samples in
SCST) reads that one copy, as does its initial state; the embedding's share of the LSTM input projection is likewise computed for
all steps in one matrix product in the teacher-forced forward.

The (B, P, A) activation is the largest tensor of a step, and on CPU tanh costs about 6x a
sigmoid (torch 2.14, AVX-512). Since tanh(u) = 2 sigmoid(2u) - 1,
    e_p = 2 w . sigmoid(2 U f_p + 2 W h) - sum(w) + b,
and softmax ignores the constant -sum(w) + b, so alpha = softmax_p(2 w . sigmoid(2 U f_p +
2 W h)) exactly (tests compare with the tanh form in float64). The bias b never matters, so
the score layer has none.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .decoders import Decoder, Rows, Tensors, check_decoder_settings, input_lengths, per_row
from .pieces import rows_per_piece


class AttentionDecoder(Decoder):
    has_attention = True

    def __init__(
        self,
        vocab_size: int,
        feature_dim: int,
        embed_dim: int = 128,
        hidden_dim: int = 256,
        attn_dim: int = 128,
        dropout: float = 0.3,
    ):
        check_decoder_settings(dropout, embed_dim=embed_dim, hidden_dim=hidden_dim, attn_dim=attn_dim)
        super().__init__(vocab_size, feature_dim)
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.feat_att = nn.Linear(feature_dim, attn_dim)  # U
        self.hid_att = nn.Linear(hidden_dim, attn_dim)  # W
        self.att_score = nn.Linear(attn_dim, 1, bias=False)  # w
        self.gate = nn.Linear(hidden_dim, feature_dim)  # f_beta
        self.init_h = nn.Linear(feature_dim, hidden_dim)
        self.init_c = nn.Linear(feature_dim, hidden_dim)
        # The LSTM cell written out so the input projection can be split by source:
        # gates = W_e E y + W_z z + W_h h + b, (B, 4H) in the order input, forget, cell, output.
        self.gates_emb = nn.Linear(embed_dim, 4 * hidden_dim)
        self.gates_ctx = nn.Linear(feature_dim, 4 * hidden_dim, bias=False)
        self.gates_hid = nn.Linear(hidden_dim, 4 * hidden_dim, bias=False)
        self.out_h = nn.Linear(hidden_dim, embed_dim)  # L_h
        self.out_z = nn.Linear(feature_dim, embed_dim, bias=False)  # L_z
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(embed_dim, vocab_size)  # L_o

    def prepare(self, feats: torch.Tensor) -> Tensors:
        """feats (B, P, D) -> (feats, 2 U feats (B, P, A)), the doubled input of the sigmoid form."""
        return feats, 2 * self.feat_att(feats)

    def init_state(self, memory: Tensors) -> Tensors:
        mean = memory[0].mean(dim=1)  # (B, D)
        return torch.tanh(self.init_h(mean)), torch.tanh(self.init_c(mean))

    def attend(self, h: torch.Tensor, memory: Tensors, rows: Rows | None = None):
        """h (R, H) -> gated context (R, D), alpha (R, P). Without `rows`, G consecutive rows
        share each of the N images of `memory`, R = N G (the K beams of a beam search);
        with `rows`, row r belongs to image rows.image[r]."""
        feats, feats_att2 = memory  # (N, P, D), (N, P, A)
        N, P, A = feats_att2.shape
        w2 = 2 * self.att_score.weight[0]  # (A,)
        if rows is None:
            query = 2 * self.hid_att(h).view(N, -1, 1, A)  # (N, G, 1, A)
            # The step's largest tensor: sigmoid in place (no second copy; autograd keeps only
            # the sigmoid's output), scored by a matrix-vector product with 2w.
            # made in pieces of whole images on CPU (capgen.models.pieces: no fresh mappings)
            n = rows_per_piece(h.device, query.shape[1] * P * A * feats_att2.element_size()) or N
            scores = [(f.unsqueeze(1) + q).sigmoid_() @ w2 for f, q in zip(feats_att2.split(n), query.split(n))]
            alpha = torch.cat(scores).softmax(dim=-1)  # (N, G, P)
            context = torch.bmm(alpha, feats).view(h.shape[0], -1)  # (N, G, D) -> (R, D)
            return torch.sigmoid(self.gate(h)) * context, alpha.view(h.shape[0], P)
        query = 2 * self.hid_att(h)  # (R, A)
        n = rows_per_piece(h.device, P * A * feats_att2.element_size()) or len(query)
        alpha = _RowScores.apply(feats_att2, query, w2, rows.image, n).softmax(dim=-1)  # (R, P)
        # The context against each row's own image without copying its features (R, P, D):
        # the rows' maps placed in an (N, G, P) grid, zero where no row is, one batched product.
        places = alpha.new_zeros(N, rows.per_image, P).index_put((rows.image, rows.slot), alpha)
        context = torch.bmm(places, feats)[rows.image, rows.slot]  # (N, G, D) -> (R, D)
        return torch.sigmoid(self.gate(h)) * context, alpha

    def _cell(self, emb_gates: torch.Tensor, state: Tensors, memory: Tensors, rows: Rows | None = None):
        """One LSTM step given the embedding's gate pre-activations (R, 4H).
        Returns the new (h, c), the context (R, D) and alpha (R, P)."""
        h, c = state
        context, alpha = self.attend(h, memory, rows)
        gates = emb_gates + self.gates_ctx(context) + self.gates_hid(h)
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return (h, c), context, alpha

    def _word_input(self, emb: torch.Tensor, h: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """The deep output's input to the word layer `out`, (..., E)."""
        return self.dropout(emb + self.out_h(h) + self.out_z(context))

    def step(self, tokens: torch.Tensor, state: Tensors, memory: Tensors, rows: Rows | None = None):
        emb = self.embed(tokens)  # (R, E)
        state, context, alpha = self._cell(self.gates_emb(emb), state, memory, rows)
        return self.out(self._word_input(emb, state[0], context)), state, alpha

    def forward(self, feats: torch.Tensor, inputs: torch.Tensor, rows: Rows | None = None, memory: Tensors | None = None,
                words: bool = True):
        """feats (N, P, D), inputs (R, T), rows: the image of each caption (None: caption b of
        image b), memory: prepare(feats) if made already -> logits (R, T, V), alphas (R, T, P);
        words=False: the word layer's input (R, T, E) in place of the logits.

        No work on padding: rows are sorted by caption length, longest first, so the n_t
        captions still going at step t are the first n_t rows and each step runs on those
        only. Steps after a row's last non-pad input give alpha 0 and h = z = 0 (their
        targets are padding, which the loss ignores)."""
        R, T = inputs.shape
        lengths = input_lengths(inputs)  # (R,)
        order = lengths.argsort(descending=True, stable=True)  # (R,) sorted row -> caption row
        going = (lengths[order].unsqueeze(0) > torch.arange(T, device=inputs.device).unsqueeze(1)).sum(1).tolist()  # n_t
        if rows is None:  # one caption per image: the images sorted with them, so that the
            # gradients sum over images in the order they always did (bit-identical runs)
            feats, memory = feats[order], None if memory is None else tuple(m[order] for m in memory)
            rows = Rows.each(R, 1, feats.device)
        else:
            rows = rows.take(order)
        memory = self.prepare(feats) if memory is None else memory  # (N, ...): the images' work, once each
        state = per_row(self.init_state(memory), rows)  # (R, H) each, in sorted order
        emb = self.embed(inputs)  # (R, T, E)
        # All steps in one product, time-major and unbound into T tensors (R, 4H): the backward
        # of step t's rows is then a (R, 4H) tensor, where a slice [:n, t] of one (R, T, 4H)
        # tensor costs a zero-filled (R, T, 4H) gradient per step (15% of the shapes step).
        emb_gates = self.gates_emb(emb[order].transpose(0, 1)).unbind(0)
        hs, contexts, alphas = [], [], []
        for t in range(T):
            n = going[t]
            state = (state[0][:n], state[1][:n])
            state, context, alpha = self._cell(emb_gates[t][:n], state, memory, rows.take(slice(0, n)))
            for out, x in ((hs, state[0]), (contexts, context), (alphas, alpha)):
                out.append(F.pad(x, (0, 0, 0, R - n)))  # (R, .) zeros for the ended rows
        unsort = order.argsort()  # (R,) caption row -> sorted row
        h, context, alpha = (torch.stack(x, dim=1)[unsort] for x in (hs, contexts, alphas))  # (R, T, .)
        word_input = self._word_input(emb, h, context)  # (R, T, E), all steps at once
        return (self.out(word_input) if words else word_input), alpha


class _RowScores(torch.autograd.Function):
    """The attention scores of rows that share images: e (R, P) = sigmoid(F[image] + query) @ w2,
    F (N, P, A) the images' doubled projections, query (R, A), w2 (A,), image (R,) the image of
    each row, made n rows at a time (CPU pieces, capgen.models.pieces).

    Each row's copy of its image's projection, then the query added in place: one (n, P, A)
    tensor per piece, whatever the number of rows per image (measured 2% slower than a
    broadcast over a fixed number of rows per image, against 5x the projection's work for 5
    captions per image). Written out because autograd's backward of each piece's gather
    zero-fills a gradient of the whole F (N, P, A) and then adds it to the others: 7 pieces
    of 20 MB per word in a self-critical step of 50 images x 5 samples, 6% of its time. Here
    one F-sized gradient per call takes every piece's rows (index_add_)."""

    @staticmethod
    def forward(ctx, feats_att2, query, w2, image, n):
        acts = [feats_att2.index_select(0, i).add_(q.unsqueeze(1)).sigmoid_() for i, q in zip(image.split(n), query.split(n))]
        w = w2.to(acts[0].dtype)  # bf16 under bf16 autocast, as autocast's matmul would take it
        ctx.acts = acts  # (n, P, A) each, the sigmoid's output; the backward computes in them
        ctx.save_for_backward(w2, image)
        ctx.n, ctx.images, ctx.query_dtype = n, feats_att2.shape[0], query.dtype
        return torch.cat([s @ w for s in acts])  # (R, P)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):  # grad (R, P)
        w2, image = ctx.saved_tensors
        acts, ctx.acts = ctx.acts, None
        if acts is None:
            raise RuntimeError("the attention scores' backward ran twice (retain_graph=True): it computes in its saved "
                               "activations, so it runs once per forward pass")
        need_f, need_q, need_w = ctx.needs_input_grad[:3]
        w = w2.to(acts[0].dtype)
        grad_f = acts[0].new_zeros(ctx.images, *acts[0].shape[1:]) if need_f else None  # (N, P, A)
        grad_q, grad_w = [], torch.zeros_like(w2) if need_w else None
        for s, i, g in zip(acts, image.split(ctx.n), grad.to(w.dtype).split(ctx.n)):
            if need_w:
                # sum over rows and cells of g s: a batched (1, P) @ (P, A) per row, 3x faster
                # than one matrix-vector product over all n P cells (which BLAS runs as a gemv)
                grad_w += torch.bmm(g.unsqueeze(1), s).flatten(0, 1).sum(0, dtype=w2.dtype)
            if need_f or need_q:
                # d e / d (F + query) = g w s (1 - s), in place in the activation, which is done
                # with: no fresh (n, P, A) block per piece (glibc may map and fault in each one)
                pre = s.addcmul_(s, s, value=-1).mul_(w).mul_(g.unsqueeze(-1))
                if need_q:
                    grad_q.append(pre.sum(1))
                if need_f:
                    grad_f.index_add_(0, i, pre)
        return grad_f, torch.cat(grad_q).to(ctx.query_dtype) if need_q else None, grad_w, None, None
