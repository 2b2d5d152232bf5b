"""The decoders' fast paths against plain step-by-step computations written from the equations
(float64, tight tolerance): same logits, attention, loss and gradients.

Fast paths checked: the attention decoder's feature projection hoisted out of the step loop,
the embedding's gate projection for all steps in one product, the sigmoid form of the
additive attention (tanh in the reference), steps skipped after each caption's end (rows
sorted by length), memory shared by the K rows of a beam and by the several captions of an
image (Rows); the RNN/LSTM decoders' fused nn.RNN/nn.LSTM over packed sequences (a
hand-written cell over every step here); on CPU, the attention's activation and the word
layer's logits made in pieces (every test runs with whole tensors and with pieces of one to a
few rows), and the word layer run inside the loss on the real tokens only.
"""

import pytest
import torch

from capgen.models import AttentionDecoder, LSTMDecoder, RNNDecoder, TransformerDecoder, losses, pieces
from capgen.models.decoders import Rows, input_lengths, per_row
from capgen.models.losses import caption_loss, word_layer_loss

from helpers.replay import tiny_sizes

V, B, T, P, D = 13, 4, 6, 9, 8


@pytest.fixture(autouse=True, params=["whole", "pieces"])
def piece_bytes(request, monkeypatch):
    """Pieces of 3 rows of float32 logits: one attention row (P x 128 float64) per piece."""
    monkeypatch.setattr(pieces, "CPU_PIECE_BYTES", 1 << 40 if request.param == "whole" else 3 * V * 4)


def _decoder(cls, seed=0):
    torch.manual_seed(seed)
    dec = cls(vocab_size=V, feature_dim=D, dropout=0.0, **tiny_sizes(cls)).double()
    with torch.no_grad():  # larger weights than the init: sharper attention, bigger gradients
        for p in dec.parameters():
            p.mul_(2.0)
    return dec


def _plain_attention(dec: AttentionDecoder, feats, inputs):
    """Show-Attend-Tell as written in the paper, one step at a time, nothing hoisted:
    e = w . tanh(U f + W h), alpha = softmax(e), z = sigmoid(f_beta h) * sum alpha f,
    LSTM([E y; z], h, c), logits = L_o(E y + L_h h + L_z z). -> logits (B, T, V), alphas (B, T, P)."""
    mean = feats.mean(1)
    h, c = torch.tanh(dec.init_h(mean)), torch.tanh(dec.init_c(mean))
    logits, alphas = [], []
    for t in range(inputs.shape[1]):
        emb = dec.embed(inputs[:, t])  # (B, E)
        e = torch.stack([dec.att_score(torch.tanh(dec.feat_att(feats[:, p]) + dec.hid_att(h))).squeeze(-1)
                         for p in range(feats.shape[1])], dim=1)  # (B, P)  # fmt: skip
        alpha = torch.exp(e - e.max(1, keepdim=True).values)
        alpha = alpha / alpha.sum(1, keepdim=True)
        z = torch.sigmoid(dec.gate(h)) * (alpha.unsqueeze(-1) * feats).sum(1)  # (B, D)
        gates = dec.gates_emb(emb) + dec.gates_ctx(z) + dec.gates_hid(h)
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        logits.append(dec.out(emb + dec.out_h(h) + dec.out_z(z)))
        alphas.append(alpha)
    return torch.stack(logits, 1), torch.stack(alphas, 1)


def _plain_recurrent(dec, feats, inputs):
    """The RNN/LSTM decoder with the cell written out from nn.RNN/nn.LSTM's documented
    equations (gate order i, f, g, o), one step at a time. -> logits (B, T, V)."""
    rnn = dec.rnn
    w_ih, w_hh, b = rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0 + rnn.bias_hh_l0
    state = torch.tanh(dec.init_proj(feats.mean(1)))
    h, c = state.chunk(2, dim=-1) if dec.cell == "lstm" else (state, None)
    out = []
    for t in range(inputs.shape[1]):
        pre = dec.embed(inputs[:, t]) @ w_ih.T + h @ w_hh.T + b
        if dec.cell == "lstm":
            i, f, g, o = pre.chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
        else:
            h = torch.tanh(pre)
        out.append(dec.out(h))
    return torch.stack(out, 1)


def _loss_and_grads(dec, logits, targets):
    loss = caption_loss(logits, targets)
    grads = torch.autograd.grad(loss, [p for p in dec.parameters()], allow_unused=True)
    return loss, grads


def _inputs_targets(seed=1):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(B, P, D, dtype=torch.float64, generator=g)
    tokens = torch.randint(3, V, (B, T + 1), generator=g)
    tokens[1, 4:] = 0  # shorter captions: padding in inputs and targets, ragged lengths
    tokens[3, 2:] = 0
    return feats, tokens[:, :-1], tokens[:, 1:]


def _assert_same_grads(fast, plain):
    for gf, gp in zip(fast, plain):
        if gp is None:  # a parameter the plain computation does not use: the fast one neither
            assert gf is None or torch.count_nonzero(gf) == 0
        else:
            torch.testing.assert_close(gf, gp, rtol=1e-9, atol=1e-11)


def test_attention_fast_path_equals_the_paper_step_by_step():
    dec = _decoder(AttentionDecoder)
    feats, inputs, targets = _inputs_targets()
    logits, alphas = dec(feats, inputs)
    ref_logits, ref_alphas = _plain_attention(dec, feats, inputs)
    real = targets != 0  # (B, T) the steps the loss reads; the fast path skips the others
    torch.testing.assert_close(logits[real], ref_logits[real], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(alphas[real], ref_alphas[real], rtol=1e-10, atol=1e-12)
    skipped = torch.arange(T) >= input_lengths(inputs).unsqueeze(1)  # (B, T) after the last input
    assert (alphas[skipped] == 0).all() and skipped.any()  # skipped steps: no attention
    assert alphas.max() > 2.0 / P  # the attention is not uniform: the comparison has teeth
    loss, grads = _loss_and_grads(dec, logits, targets)
    ref_loss, ref_grads = _loss_and_grads(dec, *_plain_attention(dec, feats, inputs)[:1], targets)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=0)
    _assert_same_grads(grads, ref_grads)


@pytest.mark.parametrize("cls", [RNNDecoder, LSTMDecoder])
def test_fused_recurrent_forward_equals_a_written_out_cell(cls):
    dec = _decoder(cls)
    feats, inputs, targets = _inputs_targets()
    logits, _ = dec(feats, inputs)
    ref = _plain_recurrent(dec, feats, inputs)
    real = targets != 0  # (B, T) the steps the loss reads; packing skips the others
    torch.testing.assert_close(logits[real], ref[real], rtol=1e-10, atol=1e-12)
    _assert_same_grads(_loss_and_grads(dec, logits, targets)[1], _loss_and_grads(dec, ref, targets)[1])


@pytest.mark.parametrize("cls", [RNNDecoder, LSTMDecoder, AttentionDecoder, TransformerDecoder])
def test_step_with_memory_shared_by_groups_of_rows(cls):
    """Beam search passes K rows of state per image and one copy of the image's memory; the
    step must equal the step on memory repeated K times."""
    dec = _decoder(cls).eval()
    K = 3
    feats = torch.randn(B, P, D, dtype=torch.float64)
    memory = dec.prepare(feats)
    state = tuple(s.repeat_interleave(K, 0) + 0.1 * torch.randn_like(s.repeat_interleave(K, 0))
                  for s in dec.init_state(memory))  # fmt: skip  # K different states per image
    tokens = torch.randint(3, V, (B * K,))
    shared = dec.step(tokens, state, memory)
    repeated = dec.step(tokens, state, tuple(m.repeat_interleave(K, 0) for m in memory))
    for a, b in zip(shared[:2], repeated[:2]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    if cls.has_attention:
        torch.testing.assert_close(shared[2], repeated[2], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls", [RNNDecoder, LSTMDecoder, AttentionDecoder, TransformerDecoder])
def test_several_captions_per_image_share_its_work_and_give_the_repeated_computations_gradients(cls):
    """k captions per image read one copy of its memory and initial state (Rows); the loss and
    every gradient (parameters and features) equal those of the features repeated k times."""
    dec = _decoder(cls)
    k = 3
    g = torch.Generator().manual_seed(2)
    feats = torch.randn(B, P, D, dtype=torch.float64, generator=g, requires_grad=True)
    tokens = torch.randint(3, V, (B * k, T + 1), generator=g)
    for row, length in enumerate(torch.randint(2, T + 2, (B * k,), generator=g).tolist()):
        tokens[row, length:] = 0  # ragged lengths within each image's captions
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    projected = []
    grid_layer = {AttentionDecoder: "feat_att", TransformerDecoder: "grid_in"}.get(cls)
    if grid_layer:  # count the rows the grid projection runs on
        getattr(dec, grid_layer).register_forward_hook(lambda m, args, out: projected.append(args[0].shape[0]))
    logits, alphas = dec(feats, inputs, Rows.each(B, k))
    assert projected in ([], [B])  # once per image
    params = list(dec.parameters())
    loss = caption_loss(logits, targets)
    grads = torch.autograd.grad(loss, [feats, *params], allow_unused=True)
    ref_logits, ref_alphas = dec(feats.repeat_interleave(k, dim=0), inputs)
    ref_loss = caption_loss(ref_logits, targets)
    ref_grads = torch.autograd.grad(ref_loss, [feats, *params], allow_unused=True)
    real = targets != 0
    torch.testing.assert_close(logits[real], ref_logits[real], rtol=1e-12, atol=1e-12)
    if cls.has_attention:
        torch.testing.assert_close(alphas, ref_alphas, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=0)
    assert grads[0].abs().sum() > 0  # the features get a gradient: the comparison has teeth
    _assert_same_grads(grads, ref_grads)


def test_rows_in_any_order_and_number_per_image_read_their_own_images_memory():
    """Rows need not be k per image nor image-major: a decode drops ended rows, a forward sorts."""
    dec = _decoder(AttentionDecoder).eval()
    feats = torch.randn(B, P, D, dtype=torch.float64)
    rows = Rows(image=torch.tensor([2, 0, 3, 0, 2, 2]), slot=torch.tensor([1, 0, 0, 2, 0, 2]), per_image=3)
    memory = dec.prepare(feats)
    state = tuple(s + 0.1 * torch.randn_like(s) for s in per_row(dec.init_state(memory), rows))  # (6, H) each
    tokens = torch.randint(3, V, (6,))
    shared = dec.step(tokens, state, memory, rows)
    own = dec.step(tokens, state, tuple(m[rows.image] for m in memory))  # each row's image memory copied
    for a, b in zip((shared[0], *shared[1], shared[2]), (own[0], *own[1], own[2])):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def _attention_step_grads(dec, feats, tokens, autocast: bool):
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits, _ = dec(feats, tokens[:, :-1], Rows.each(B, 2))
        loss = caption_loss(logits.float(), tokens[:, 1:])
    return torch.autograd.grad(loss, list(dec.parameters()))


def test_the_attention_scores_backward_runs_under_bf16_autocast_near_float32s_gradients():
    """Under bf16 autocast the scores compute in bf16 (the projections' dtype); each gradient
    comes back in its parameter's dtype and near the fp32 step's."""
    dec = _decoder(AttentionDecoder).float()
    g = torch.Generator().manual_seed(3)
    feats, tokens = torch.randn(B, P, D, generator=g), torch.randint(3, V, (2 * B, T + 1), generator=g)
    mixed, full = _attention_step_grads(dec, feats, tokens, True), _attention_step_grads(dec, feats, tokens, False)
    for p, a, b in zip(dec.parameters(), mixed, full):
        assert a.dtype == p.dtype == torch.float32
        assert (a - b).norm() <= 0.05 * b.norm() + 1e-6, p.shape


def test_the_attention_scores_backward_refuses_a_second_run_over_one_forward():
    """It computes in its saved activations, so retain_graph=True cannot replay it: a clear error, not wrong numbers."""
    dec = _decoder(AttentionDecoder)
    logits, _ = dec(torch.randn(B, P, D, dtype=torch.float64), torch.randint(3, V, (2 * B, T)), Rows.each(B, 2))
    logits.sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward ran twice"):
        logits.sum().backward()


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("cls", [RNNDecoder, LSTMDecoder, AttentionDecoder])
def test_the_word_layer_run_inside_the_loss_gives_the_loss_and_gradients_of_the_logits(cls, smoothing):
    """Training's path (word_layer_loss on the word layer's input, real tokens only, in pieces)
    against caption_loss of the plain step-by-step logits, label smoothing included."""
    dec = _decoder(cls)
    feats, inputs, targets = _inputs_targets()
    params = list(dec.parameters())
    hidden, _ = dec(feats, inputs, words=False)
    loss = word_layer_loss(dec.out, hidden, targets, 0, smoothing)
    plain = _plain_attention(dec, feats, inputs)[0] if cls is AttentionDecoder else _plain_recurrent(dec, feats, inputs)
    ref = caption_loss(plain, targets, 0, smoothing)
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=0)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    _assert_same_grads(grads, torch.autograd.grad(ref, params, allow_unused=True))
    word_layer = next(i for i, p in enumerate(params) if p is dec.out.weight)
    assert grads[word_layer].abs().sum() > 0  # the word layer is trained through the loss


def test_the_word_layer_loss_on_a_gpu_is_the_loss_of_the_whole_logits(monkeypatch):
    """Where no pieces are made (a GPU: rows_per_piece gives None) the loss takes the whole
    logits with the padding ignored, without picking the real tokens out first."""
    dec = _decoder(AttentionDecoder)
    feats, inputs, targets = _inputs_targets()
    hidden, _ = dec(feats, inputs, words=False)
    monkeypatch.setattr(losses, "rows_per_piece", lambda device, row_bytes: None)
    monkeypatch.setattr(losses, "caption_loss", lambda *a, **kw: torch.tensor(7.0))  # the path taken
    assert word_layer_loss(dec.out, hidden, targets, 0, 0.1) == 7.0
    monkeypatch.undo()
    monkeypatch.setattr(losses, "rows_per_piece", lambda device, row_bytes: None)
    torch.testing.assert_close(word_layer_loss(dec.out, hidden, targets, 0, 0.1),
                               caption_loss(dec.out(hidden), targets, 0, 0.1), rtol=1e-12, atol=0)
