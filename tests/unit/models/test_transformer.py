"""The Transformer decoder against a plain float64 computation written from its equations
(one position and one head at a time, no cache, explicit softmax), and its key/value cache
against recomputing the prefix. The decoding methods, n-best against exhaustive enumeration
and the SCST gradient run it through the shared tests (test_search, test_decoding, test_scst)."""

import copy
import math

import pytest
import torch

from capgen.models import TransformerDecoder
from capgen.models.decoders import Rows
from capgen.models.losses import caption_loss
from capgen.models.search import DecodeSettings, decode

from helpers.replay import replay, sharp_decoder

V, N, T, P, D = 11, 3, 5, 6, 7
START, END, UNK = 1, 2, 3


def _decoder(seed=0, **kw):
    torch.manual_seed(seed)
    sizes = {"d_model": 8, "layers": 2, "heads": 2, "ffn_dim": 12, "dropout": 0.0} | kw
    return TransformerDecoder(V, D, **sizes).double()


def _inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(N, P, D, dtype=torch.float64, generator=g)
    tokens = torch.randint(3, V, (N, T + 1), generator=g)
    tokens[1, 3:] = 0  # a shorter caption: padding after it
    return feats, tokens[:, :-1], tokens[:, 1:]


def _layer_norm(x, norm):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def _softmax(scores):
    e = torch.exp(scores - max(scores.tolist()))
    return e / e.sum()


def _position(dec, t):
    if dec.pos is not None:
        return dec.pos.weight[t]
    d = dec.d_model
    return torch.tensor([math.sin(t / 10000 ** (i / d)) if i % 2 == 0 else math.cos(t / 10000 ** ((i - 1) / d))
                         for i in range(d)], dtype=torch.float64)  # fmt: skip


def _plain(dec: TransformerDecoder, feats, inputs):
    """logits (R, T, V) and every layer's cross-attention weights [layer][r][t] (heads, P),
    position by position and head by head, each word seeing the words up to itself."""
    R, L = inputs.shape
    h, d = dec.heads, dec.d_model
    dh = d // h
    logits, weights = torch.zeros(R, L, V, dtype=torch.float64), [[[None] * L for _ in range(R)] for _ in dec.blocks]
    for r in range(R):
        grid = _layer_norm(feats[r] @ dec.grid_in.weight.T + dec.grid_in.bias, dec.grid_norm)  # (P, d)
        x = [dec.embed.weight[inputs[r, t]] * math.sqrt(d) + _position(dec, t) for t in range(L)]
        for layer, b in enumerate(dec.blocks):
            qkv = [b.qkv(_layer_norm(v, b.norm_self)) for v in x]  # as the layer saw x
            keys, values = (grid @ b.kv_cross.weight.T + b.kv_cross.bias).split(d, dim=-1)  # (P, d) each
            out = []
            for t in range(L):
                heads = []
                for j in range(h):
                    s = slice(j * dh, (j + 1) * dh)
                    q = qkv[t][:d][s]
                    a = _softmax(torch.stack([q @ qkv[u][d:2 * d][s] / math.sqrt(dh) for u in range(t + 1)]))
                    heads.append(sum(a[u] * qkv[u][2 * d:][s] for u in range(t + 1)))
                y = x[t] + b.self_out(torch.cat(heads))
                q = b.q_cross(_layer_norm(y, b.norm_cross))
                crossed, maps = [], []
                for j in range(h):
                    s = slice(j * dh, (j + 1) * dh)
                    a = _softmax(keys[:, s] @ q[s] / math.sqrt(dh))  # (P,)
                    maps.append(a)
                    crossed.append(a @ values[:, s])
                y = y + b.cross_out(torch.cat(crossed))
                weights[layer][r][t] = torch.stack(maps)
                out.append(y + b.ffn(_layer_norm(y, b.norm_ffn)))
            x = out
        logits[r] = torch.stack([dec.out(_layer_norm(v, dec.norm)) for v in x])
    return logits, weights


@pytest.mark.parametrize("positions", ["sinusoidal", "learned"])
def test_teacher_forced_logits_and_attention_equal_the_equations_position_by_position(positions):
    dec = _decoder(positions=positions)
    feats, inputs, targets = _inputs()
    logits, alphas = dec(feats, inputs)
    ref, weights = _plain(dec, feats, inputs)
    real = targets != 0
    torch.testing.assert_close(logits[real], ref[real], rtol=1e-10, atol=1e-12)
    last = torch.stack([torch.stack([w.mean(0) for w in row]) for row in weights[-1]])  # (R, T, P), mean over heads
    torch.testing.assert_close(alphas[real], last[real], rtol=1e-10, atol=1e-12)
    assert (alphas[1, 3:] == 0).all()  # after the caption's last input, as the attention LSTM
    torch.testing.assert_close(caption_loss(logits, targets), caption_loss(ref, targets), rtol=1e-12, atol=0)


def test_the_attention_shown_is_the_chosen_layers_chosen_head():
    feats, inputs, targets = _inputs()
    _, weights = _plain(_decoder(), feats, inputs)
    _, alphas = _decoder(attention_layer=0, attention_head=1)(feats, inputs)
    first = torch.stack([torch.stack([w[1] for w in row]) for row in weights[0]])  # layer 0, head 1
    real = targets != 0
    torch.testing.assert_close(alphas[real], first[real], rtol=1e-10, atol=1e-12)
    assert not torch.allclose(first, torch.stack([torch.stack([w[0] for w in row]) for row in weights[0]]))


def test_stepping_with_the_cache_gives_the_teacher_forced_logits():
    dec = _decoder().eval()
    feats, inputs, targets = _inputs()
    logps, alphas = replay(dec, feats, targets, START)  # steps <start>, then the targets
    full, full_alphas = dec(feats, torch.cat((torch.full((N, 1), START), targets[:, :-1]), dim=1))
    full = full.clone()
    full[..., [0, START]] = -math.inf
    real = targets != 0
    torch.testing.assert_close(logps[real], full.log_softmax(-1)[real], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(alphas[real], full_alphas[real], rtol=1e-10, atol=1e-12)


METHODS = [{"method": "greedy"}, {"method": "beam", "beam_size": 3}, {"method": "beam", "beam_size": 3, "n_best": 3},
           {"method": "diverse_beam", "beam_size": 4, "groups": 2}, {"method": "sample"}]  # fmt: skip


@pytest.mark.parametrize("settings", METHODS, ids=lambda s: "-".join(map(str, s.values())))
def test_decoding_with_the_key_value_cache_equals_recomputing_every_prefix(settings):
    cached = sharp_decoder(TransformerDecoder, 8, vocab=17, end_bias=0.5)  # captions of several lengths
    plain = copy.deepcopy(cached)
    plain.kv_cache = False
    feats = torch.randn(6, 9, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    results = []
    for dec in (cached, plain):
        with torch.no_grad():
            results.append(decode(dec, feats, DecodeSettings(max_len=7, **settings), START, END, UNK,
                                  generator=torch.Generator().manual_seed(7)))  # fmt: skip
    a, b = results
    assert len(plain.init_state(plain.prepare(feats))) == 1 < len(cached.init_state(cached.prepare(feats)))
    assert torch.equal(a.tokens, b.tokens)
    torch.testing.assert_close(a.logprob, b.logprob, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(a.alphas, b.alphas, rtol=1e-10, atol=1e-12)
    assert len(set((a.tokens != 0).sum(-1).flatten().tolist())) > 1  # the comparison sees rows end


def test_rows_in_any_order_read_their_own_images_keys():
    """Decoding drops ended rows: rows then index their images' cached keys and values."""
    dec = _decoder().eval()
    feats, inputs, _ = _inputs()
    rows = Rows(image=torch.tensor([2, 0, 2, 1]), slot=torch.tensor([0, 0, 1, 0]), per_image=2)
    logits, alphas = dec(feats, inputs[rows.image], rows)
    own, own_alphas = dec(feats[rows.image], inputs[rows.image])
    torch.testing.assert_close(logits, own, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(alphas, own_alphas, rtol=1e-12, atol=1e-12)


BAD = [({"heads": 3}, "model.decoder.d_model=8 with model.decoder.heads=3"),
       ({"positions": "rotary"}, "model.decoder.positions='rotary'"),
       ({"attention_layer": 2}, "model.decoder.attention_layer=2"),
       ({"attention_head": 2}, "model.decoder.attention_head=2"),
       ({"layers": 0}, "model.decoder.layers=0")]  # fmt: skip


@pytest.mark.parametrize(("kw", "message"), BAD, ids=lambda x: str(x)[:20])
def test_bad_settings_are_named(kw, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        _decoder(**kw)


def test_learned_positions_refuse_a_caption_longer_than_they_were_trained_for():
    dec = _decoder(positions="learned", max_positions=4).eval()
    feats, _, _ = _inputs()
    with pytest.raises(ValueError, match="max_positions=4"):
        with torch.no_grad():
            decode(dec, feats, DecodeSettings(max_len=6, method="greedy", min_len=6), START, END, UNK)
