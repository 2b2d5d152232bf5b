"""Test-time ensembles (capgen.models.ensemble) against independent references: the members
stepped alone and combined by hand in float64, exhaustive enumeration of every caption on a
tiny vocabulary, and the member alone for an ensemble of one. Tiny float64 decoders in eval
mode, no dropout; members of different kinds and feature shapes."""

import itertools
import math

import pytest
import torch

from capgen.models import AttentionDecoder, Captioner, LSTMDecoder, RNNDecoder, SmallCNN, TransformerDecoder
from capgen.models.ensemble import Ensemble, EnsembleDecoder
from capgen.models.search import DecodeSettings, NBestResult, decode
from capgen.models.search.results import word_logits

from helpers.replay import replay, sharp_decoder

START, END, UNK = 1, 2, 3
# Two members that differ in kind and in features: an LSTM on a 2x2 grid of 6 dims, an
# attention decoder on a 3x3 grid of 8 dims.
SHAPES = [(4, 6), (9, 8)]
V, MAX_LEN = 7, 4  # <pad>, <start>, <end> and the words 3 (<unk>), 4, 5, 6; captions of at most 4 words
WORDS = list(range(3, V))
EXHAUSTIVE_BEAM = V * len(WORDS) ** MAX_LEN  # every candidate of the last step: nothing pruned


def _members(seed=0, vocab=V, kinds=(LSTMDecoder, AttentionDecoder)):
    return [sharp_decoder(cls, d, seed=seed + k, vocab=vocab, scale=3.0, end_bias=1.0)
            for k, (cls, (_, d)) in enumerate(zip(kinds, SHAPES))]


def _feats(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, p, d, dtype=torch.float64, generator=g) for p, d in SHAPES]


def _packed(feats):
    """The members' features as the ensemble takes them (B, 1, S), packed here by hand."""
    return torch.cat([f.reshape(len(f), -1) for f in feats], dim=1).unsqueeze(1)


def _ensemble(decoders):
    """The members' maps averaged where they attend over the 3x3 grid (the second member's)."""
    return EnsembleDecoder(decoders, SHAPES, attending=[k for k, d in enumerate(decoders) if d.has_attention and k == 1])


def _hand_logp(decoders, feats, tokens):
    """log p of every word at every step of captions tokens (R, L), computed independently:
    each member replayed alone, p = the normalised geometric mean of their distributions over
    the emittable words (products and roots, not the ensemble's mean of logs). (R, L, V)
    float64, -inf for <pad> and <start>."""
    probs = [replay(dec, f, tokens, START)[0].exp() for dec, f in zip(decoders, feats)]  # (R, L, V) each
    geometric = math.prod(probs) ** (1 / len(probs))
    return (geometric / geometric.sum(-1, keepdim=True)).log()


@torch.no_grad()
def _decode(dec, feats, generator=None, **settings):
    return decode(dec, feats, DecodeSettings(max_len=MAX_LEN, **settings), START, END, UNK, generator=generator)


def _rows(result):
    """(R, L) tokens, (R,) logprob, (R, L) token log-probs and the image of each row."""
    if isinstance(result, NBestResult):
        B, N, L = result.tokens.shape
        return (result.tokens.reshape(B * N, L), result.logprob.reshape(-1), result.token_logprobs.reshape(B * N, L),
                torch.arange(B).repeat_interleave(N))
    return result.tokens, result.logprob, result.token_logprobs, torch.arange(len(result.tokens))


# ----- the distribution ------------------------------------------------------------------------
def test_an_ensemble_step_is_the_normalised_geometric_mean_of_its_members():
    decoders, feats = _members(), _feats(3)
    ens = _ensemble(decoders)
    tokens = torch.tensor([[4, 5, 6, 2], [6, 6, 3, 2], [5, 4, 4, 4]])
    expected = _hand_logp(decoders, feats, tokens)

    memory = ens.prepare(_packed(feats))
    state = ens.init_state(memory)
    prev = torch.full((3,), START)
    for t in range(tokens.shape[1]):
        logits, state, alpha = ens.step(prev, state, memory)
        got = word_logits(logits, START).log_softmax(-1)  # what every decoding method makes of the logits
        torch.testing.assert_close(got, expected[:, t], rtol=0, atol=1e-12)
        # the attention is the one attending member's, at the same step
        _, alphas = replay(decoders[1], feats[1], tokens[:, : t + 1], START)
        torch.testing.assert_close(alpha, alphas[:, t], rtol=0, atol=1e-12)
        prev = tokens[:, t]
    # It differs from each member alone (the test would pass for an "ensemble" of its first member otherwise).
    for dec, f in zip(decoders, feats):
        assert not torch.allclose(replay(dec, f, tokens, START)[0][:, :, 3:], expected[:, :, 3:], atol=1e-3)


def test_the_teacher_forced_forward_gives_the_steps_distribution_and_refuses_words_false():
    decoders, feats = _members(seed=3), _feats(2, seed=4)
    ens = _ensemble(decoders)
    captions = torch.tensor([[START, 4, 5, 6, 2], [START, 6, 3, 0, 0]])
    with torch.no_grad():
        logits, alphas = ens(_packed(feats), captions[:, :-1])  # (R, T, V)
    expected = _hand_logp(decoders, feats, captions[:, 1:])
    steps = (captions[:, :-1] != 0).sum(1)
    for r in range(2):
        got = word_logits(logits[r, : steps[r]], START).log_softmax(-1)
        torch.testing.assert_close(got, expected[r, : steps[r]], rtol=0, atol=1e-12)
    assert alphas.shape == (2, 4, 9)
    with pytest.raises(ValueError, match="no single word layer"):
        ens(_packed(feats), captions[:, :-1], words=False)


def test_attention_is_the_mean_of_the_attending_members_and_none_without_any():
    decoders = [sharp_decoder(AttentionDecoder, 8, seed=s, vocab=V) for s in (0, 1)]
    feats = [torch.randn(2, 9, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(s)) for s in (5, 6)]
    ens = EnsembleDecoder(decoders, [(9, 8), (9, 8)], attending=[0, 1])
    memory = ens.prepare(torch.cat([f.reshape(2, -1) for f in feats], 1).unsqueeze(1))
    _, _, alpha = ens.step(torch.full((2,), START), ens.init_state(memory), memory)
    alone = [d.step(torch.full((2,), START), d.init_state(d.prepare(f)), d.prepare(f))[2] for d, f in zip(decoders, feats)]
    torch.testing.assert_close(alpha, (alone[0] + alone[1]) / 2, rtol=0, atol=1e-12)
    torch.testing.assert_close(alpha.sum(-1), torch.ones(2, dtype=torch.float64))

    plain = EnsembleDecoder([sharp_decoder(RNNDecoder, 6, vocab=V), sharp_decoder(LSTMDecoder, 8, vocab=V)],
                            [(4, 6), (9, 8)])
    memory = plain.prepare(_packed(_feats(2)))
    assert not plain.has_attention
    assert plain.step(torch.full((2,), START), plain.init_state(memory), memory)[2] is None


# ----- every decoding method -------------------------------------------------------------------
def test_the_ensembles_n_best_equals_exhaustive_enumeration():
    """A beam wider than the search space returns exactly the n best captions of the ensemble's
    distribution, scored by hand from the members alone; with min_len 2 those the constraint allows."""
    N = 8
    for seed, min_len in ((0, 0), (1, 0), (2, 2)):
        decoders, feats = _members(seed=seed), _feats(1, seed=seed)
        seqs = [[*c, END] for k in range(min_len, MAX_LEN + 1) for c in itertools.product(WORDS, repeat=k)]
        logps, alone = [], [[] for _ in decoders]
        for k in range(1, MAX_LEN + 2):
            group = torch.tensor([s for s in seqs if len(s) == k], dtype=torch.long).view(-1, k)
            if len(group):
                expanded = [f.expand(len(group), -1, -1) for f in feats]
                lp = _hand_logp(decoders, expanded, group)
                logps.append(lp.gather(2, group.unsqueeze(2)).squeeze(2).sum(1))
                for m, (dec, f) in enumerate(zip(decoders, expanded)):
                    own = replay(dec, f, group, START)[0]
                    alone[m].append(own.gather(2, group.unsqueeze(2)).squeeze(2).sum(1))
        logps = torch.cat(logps)
        order = logps.argsort(descending=True, stable=True)[:N]
        res = _decode(_ensemble(decoders), _packed(feats), method="beam", beam_size=EXHAUSTIVE_BEAM, n_best=N,
                      min_len=min_len)
        got = [row[: row.index(END) + 1] for row in res.tokens[0].tolist()]
        assert got == [seqs[i] for i in order]
        torch.testing.assert_close(res.logprob[0].double(), logps[order], rtol=0, atol=1e-9)
        # The ensemble's n best are neither member's (else the test could not tell them apart).
        for member in alone:
            assert torch.cat(member).argsort(descending=True, stable=True)[:N].tolist() != order.tolist()


METHODS = [
    {"method": "greedy"},
    {"method": "beam", "beam_size": 3, "n_best": 2, "length_penalty": 0.7},
    {"method": "diverse_beam", "beam_size": 4, "groups": 2, "diversity_strength": 0.5, "n_best": 3},
    {"method": "sample", "n_best": 3, "temperature": 0.8, "top_p": 0.9},
    {"method": "beam", "beam_size": 3, "min_len": 2, "no_repeat_ngram_size": 1, "suppress_unk": True},
    {"method": "sample", "top_k": 2, "min_len": 1},
]


@pytest.mark.parametrize("kinds", [(LSTMDecoder, AttentionDecoder), (TransformerDecoder, AttentionDecoder)],
                         ids=lambda k: "+".join(c.__name__ for c in k))
@pytest.mark.parametrize("settings", METHODS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_every_method_records_the_ensembles_own_log_probabilities(settings, kinds):
    """Each caption's token log-probs are the hand-made ensemble distribution's at its words, and
    they sum to its logprob; the constraints hold."""
    decoders, feats = _members(seed=5, kinds=kinds), _feats(3, seed=5)
    res = _decode(_ensemble(decoders), _packed(feats), generator=torch.Generator().manual_seed(0), **settings)
    tokens, logprob, token_logprobs, image = _rows(res)
    valid = tokens != 0
    lp = _hand_logp(decoders, [f[image] for f in feats], tokens)
    own = lp.gather(2, tokens.unsqueeze(2)).squeeze(2).where(valid, 0.0)
    torch.testing.assert_close(token_logprobs.double(), own, rtol=0, atol=1e-9)
    torch.testing.assert_close(token_logprobs.sum(1), logprob)
    words = [[w for w in row if w not in (0, END)] for row in tokens.tolist()]
    assert all(len(w) >= settings.get("min_len", 0) for w in words)
    if settings.get("suppress_unk"):
        assert all(UNK not in w for w in words)


# ----- an ensemble of one ----------------------------------------------------------------------
def _captioner(decoder, seed):
    torch.manual_seed(seed)
    return Captioner(SmallCNN(widths=(4, 8, 8, 8), grid=3), decoder, vocab_size=11).eval()


def _images(n=3):
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(9))


ONE = [
    DecodeSettings(method="greedy", max_len=6),
    DecodeSettings(method="beam", beam_size=3, n_best=3, max_len=6),
    DecodeSettings(method="sample", n_best=2, temperature=1.3, max_len=6),
]


SIZES = {TransformerDecoder: {"d_model": 8, "heads": 2, "ffn_dim": 16}}


@pytest.mark.parametrize("factory", [LSTMDecoder, AttentionDecoder, TransformerDecoder])
@pytest.mark.parametrize("settings", ONE, ids=lambda s: s.method)
def test_an_ensemble_of_one_decodes_exactly_as_its_member(factory, settings):
    net = _captioner(lambda **kw: factory(**kw, **SIZES.get(factory, {"embed_dim": 8, "hidden_dim": 8})), seed=0)
    one = Ensemble([net]).eval()
    images = _images()
    a = net.decode(images, settings, START, END, UNK, 6, torch.Generator().manual_seed(3))
    b = one.decode(images, settings, START, END, UNK, 6, torch.Generator().manual_seed(3))
    for x, y in zip(a, b):
        assert (x is None and y is None) or torch.equal(x, y)  # ids, scores and maps bit for bit
    assert one.has_attention == net.has_attention and one.grid == net.grid


def test_members_attending_over_grids_of_different_sizes_are_refused_as_the_attention():
    with pytest.raises(ValueError, match=r"different numbers of cells \[4, 9\]"):
        EnsembleDecoder(_members(kinds=(TransformerDecoder, AttentionDecoder)), SHAPES, attending=[0, 1])


def test_an_ensemble_of_captioners_encodes_with_each_members_encoder():
    """Two Captioners with their own encoders: the ensemble's memory is each member's prepare of its
    own encoder's features, and cached features of one encoder are refused."""
    nets = [_captioner(lambda **kw: LSTMDecoder(**kw, embed_dim=8, hidden_dim=8), seed=1),
            _captioner(lambda **kw: AttentionDecoder(**kw, embed_dim=8, hidden_dim=8, attn_dim=8), seed=2)]
    ens = Ensemble(nets).eval()
    images = _images(2)
    with torch.no_grad():
        memory = ens.decoder.prepare(ens.encode(images))
        own = [x for n in nets for x in n.decoder.prepare(n.encode(images))]
    assert len(memory) == len(own)
    for x, y in zip(memory, own):  # the same up to float32 rounding (the packed features' memory layout differs)
        torch.testing.assert_close(x, y)
    result = ens.decode(images, DecodeSettings(method="beam", beam_size=2, max_len=5), START, END, UNK, 5)
    assert result.alphas is not None and result.alphas.shape[-1] == 9  # the attention member's 3x3 grid
    with pytest.raises(ValueError, match="each member's own encoder"):
        ens.encode(torch.zeros(2, 9, 8))


def test_attending_members_on_grids_of_different_sizes_give_no_attention_and_say_why():
    def attn(**kw):
        return AttentionDecoder(**kw, embed_dim=8, hidden_dim=8, attn_dim=8)

    torch.manual_seed(0)
    nets = [Captioner(SmallCNN(widths=(4, 8, 8, 8), grid=g), attn, vocab_size=11).eval() for g in (2, 3)]
    ens = Ensemble(nets)
    assert not ens.has_attention and "2x2, 3x3" in ens.attention_note
    assert ens.decode(_images(1), DecodeSettings(max_len=4), START, END, UNK, 4).alphas is None
