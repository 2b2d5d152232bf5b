"""Beam search and sampling (capgen.models.search) against greedy, exhaustive search and
step-by-step replays through the decoder. Tiny float64 decoders in eval mode, no dropout."""

import itertools
import math

import pytest
import torch

from capgen.models import AttentionDecoder, Captioner, LSTMDecoder, RNNDecoder, SmallCNN, TransformerDecoder
from capgen.models.search import beam_search, greedy, sample

from helpers.replay import replay, sharp_decoder

DECODERS = [RNNDecoder, LSTMDecoder, AttentionDecoder, TransformerDecoder]
V, B, P, D = 17, 4, 9, 8
START, END = 1, 2


def _decoder(cls, **kw):
    return sharp_decoder(cls, D, **{"vocab": V, **kw})


# Untrained decoders spread probability almost evenly, so a beam ends every caption at once or
# never. These settings, found by trying a few, give captions of several lengths per batch.
VARIED = {RNNDecoder: {"scale": 2.0, "end_bias": 0.0}, LSTMDecoder: {"scale": 4.0, "end_bias": 2.0},
          AttentionDecoder: {"scale": 3.0, "end_bias": 2.0},
          TransformerDecoder: {"scale": 1.0, "end_bias": 0.5}}  # fmt: skip


def _varied(cls):
    return _decoder(cls, **VARIED[cls])


def _feats(n=B, seed=1):
    return torch.randn(n, P, D, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _replay(dec, feats, tokens):
    """Log-prob of every token (N, L) and the attention maps (N, L, P) (helpers.replay)."""
    logps, alphas = replay(dec, feats, tokens, START)
    return logps.gather(2, tokens.unsqueeze(2)).squeeze(2), alphas


def _lengths(tokens):
    """Caption lengths in tokens, <end> included: <pad>=0 only ever follows a caption."""
    return (tokens != 0).sum(1)


def _check_consistent(dec, feats, res):
    """Tokens are padded after <end>, token_logprobs are the decoder's log-probs of the
    tokens and sum to logprob."""
    n = _lengths(res.tokens)
    valid = torch.arange(res.tokens.shape[1]) < n.unsqueeze(1)  # (N, L)
    assert (res.tokens[~valid] == 0).all()
    logp, _ = _replay(dec, feats, res.tokens)
    torch.testing.assert_close(res.token_logprobs.double(), logp.where(valid, 0.0), rtol=0, atol=1e-5)
    torch.testing.assert_close(res.token_logprobs.sum(1), res.logprob)


# ----- beam search ------------------------------------------------------------------------
@pytest.mark.parametrize("cls", DECODERS)
@pytest.mark.parametrize("varied", [False, True])
def test_beam_of_one_equals_greedy(cls, varied):
    dec = _varied(cls) if varied else _decoder(cls)
    feats = _feats(6)
    g = greedy(dec, feats, max_len=7, start_id=START, end_id=END)
    b = beam_search(dec, feats, beam_size=1, max_len=7, start_id=START, end_id=END)
    assert torch.equal(b.tokens, g.tokens)
    torch.testing.assert_close(b.logprob, g.logprob)
    _check_consistent(dec, feats, b)


WORDS_V, WORDS_MAX_LEN = 7, 4  # <pad>, <start>, <end> and 4 words: 5 tokens can be emitted
WORDS = list(range(3, WORDS_V))
EXHAUSTIVE_BEAM = WORDS_V * len(WORDS) ** WORDS_MAX_LEN  # every candidate of the last step: nothing pruned


def _exhaustive(dec, feats):
    """Every finished caption (0..max_len words then <end>) with its exact float64 log-prob,
    by stepping the decoder."""
    seqs, logps = [], []
    for n in range(WORDS_MAX_LEN + 1):
        group = torch.tensor([[*c, END] for c in itertools.product(WORDS, repeat=n)])  # (4**n, n+1)
        logp, _ = _replay(dec, feats.expand(len(group), -1, -1), group)
        seqs += group.tolist()
        logps.append(logp.sum(1))
    return seqs, torch.cat(logps)


# Seeds per decoder, found by trying: weights x3 and a push towards <end> give non-trivial
# optima, but a seed where greedy misses the optimum is rare (1 in 40 for attention).
EXHAUSTIVE_SEEDS = {RNNDecoder: (0, 16), LSTMDecoder: (0, 13), AttentionDecoder: (0, 23), TransformerDecoder: (0, 13)}


@pytest.mark.parametrize("cls", DECODERS)
def test_beam_search_finds_the_exhaustive_optimum(cls):
    """A beam wider than the search space is exact: it returns the best of all captions up to
    max_len words, by raw log-prob and, with a length penalty, by log-prob / len**alpha."""
    greedy_worse = penalty_matters = False
    for seed in EXHAUSTIVE_SEEDS[cls]:
        dec = _decoder(cls, seed=seed, vocab=WORDS_V, scale=3.0, end_bias=1.0)
        feats = _feats(1, seed=seed)
        seqs, logps = _exhaustive(dec, feats)
        lengths = torch.tensor([len(s) for s in seqs], dtype=torch.float64)
        for alpha in (0.0, 1.0):
            best = int((logps / lengths**alpha).argmax())
            res = beam_search(dec, feats, EXHAUSTIVE_BEAM, WORDS_MAX_LEN, START, END, length_penalty=alpha)
            assert res.tokens[0].tolist() == seqs[best]
            torch.testing.assert_close(res.logprob[0].double(), logps[best], rtol=0, atol=1e-5)
            penalty_matters |= alpha > 0 and seqs[best] != seqs[int(logps.argmax())]
        g = greedy(dec, feats, WORDS_MAX_LEN, START, END).tokens[0].tolist()
        greedy_worse |= END in g and g != seqs[int(logps.argmax())]
    # the test has teeth: greedy ends a caption that is not the best one, and the penalty
    # changes the answer, in at least one seed
    assert greedy_worse and penalty_matters


@pytest.mark.parametrize("cls", DECODERS)
@pytest.mark.parametrize("beam", [3, 5])
def test_batch_equals_one_image_at_a_time(cls, beam):
    dec = _varied(cls)
    feats = _feats(6)
    batch = beam_search(dec, feats, beam, max_len=7, start_id=START, end_id=END, length_penalty=1.0)
    lengths = _lengths(batch.tokens)
    assert len(set(lengths.tolist())) > 1  # captions of several lengths: the done logic is exercised
    for i in range(len(feats)):
        one = beam_search(dec, feats[i : i + 1], beam, max_len=7, start_id=START, end_id=END, length_penalty=1.0)
        assert one.tokens.shape[1] == lengths[i]
        assert torch.equal(batch.tokens[i, : lengths[i]], one.tokens[0])
        torch.testing.assert_close(batch.logprob[i], one.logprob[0])
        if batch.alphas is not None:
            torch.testing.assert_close(batch.alphas[i, : lengths[i]], one.alphas[0])
    _check_consistent(dec, feats, batch)


@torch.no_grad()
def _reference_beam(dec, feats, K, max_len, alpha):
    """beam_search's rule as its docstring states it, for one image (1, P, D), written the
    plain way: Python lists of hypotheses, one decoder step per hypothesis."""
    memory = dec.prepare(feats)
    live = [(0.0, [START], dec.init_state(memory))]  # (raw score, tokens with <start>, state)
    best = None  # (normalised score, raw score, tokens) of the best finished caption
    for t in range(max_len + 1):
        cands = []
        for score, toks, state in live:
            logits, new_state, _ = dec.step(torch.tensor(toks[-1:]), state, memory)
            logits = logits.float()
            logits[0, [0, START]] = -math.inf  # <pad> and <start> are never words
            logp = logits.log_softmax(-1)[0].tolist()
            cands += [(score + lp, toks + [w], new_state) for w, lp in enumerate(logp)]
        cands.sort(key=lambda c: -c[0])
        for score, toks, _ in cands[:K]:  # <end> counts among the K best only
            norm = score / (len(toks) - 1) ** alpha
            if toks[-1] == END and (best is None or norm > best[0]):
                best = (norm, score, toks[1:])
        if t == max_len:  # max_len words: a beam may only end now
            break
        live = [c for c in cands if c[1][-1] != END][:K]
        if best is not None and best[0] >= live[0][0] / (max_len + 1) ** alpha:
            break
    return (best[2], best[1]) if best is not None else (live[0][1][1:], live[0][0])


@pytest.mark.parametrize("cls", DECODERS)
@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_beam_search_matches_a_plain_reference(cls, alpha):
    dec = _varied(cls)
    feats = _feats(6)
    res = beam_search(dec, feats, 3, max_len=7, start_id=START, end_id=END, length_penalty=alpha)
    for i in range(len(feats)):
        tokens, logprob = _reference_beam(dec, feats[i : i + 1], 3, 7, alpha)
        assert res.tokens[i, : len(tokens)].tolist() == tokens
        assert abs(res.logprob[i].item() - logprob) < 1e-4


@pytest.mark.parametrize("cls", DECODERS)
def test_beam_is_at_least_as_likely_as_greedy(cls):
    dec = _varied(cls)
    feats = _feats(6)
    g = greedy(dec, feats, 7, START, END)
    b = beam_search(dec, feats, 5, 7, START, END)
    finished = (g.tokens == END).any(1)  # beam prefers any finished caption to an unfinished one
    assert (b.logprob[finished] >= g.logprob[finished] - 1e-5).all()


@pytest.mark.parametrize("cls", DECODERS)
def test_no_end_returns_the_best_unfinished_caption(cls):
    """<end> never wins: no crash, every caption runs to the length limit (max_len words, as
    greedy's), with a finite log-prob."""
    dec = _decoder(cls)
    with torch.no_grad():
        dec.out.bias[END] = -1e9
    feats = _feats()
    res = beam_search(dec, feats, 3, max_len=5, start_id=START, end_id=END)
    assert res.tokens.shape == (B, 5) and not (res.tokens == END).any()
    assert torch.isfinite(res.logprob).all() and torch.isfinite(res.token_logprobs).all()
    _check_consistent(dec, feats, res)
    # beam 1 is still greedy there
    g = greedy(dec, feats, 5, START, END)
    b = beam_search(dec, feats, 1, max_len=5, start_id=START, end_id=END)
    assert torch.equal(b.tokens, g.tokens)


@pytest.mark.parametrize("decode", ["beam", "greedy"])
def test_the_attention_maps_are_those_of_the_chosen_caption(decode):
    dec = _varied(AttentionDecoder)
    feats = _feats(6)
    if decode == "beam":
        res = beam_search(dec, feats, 4, max_len=7, start_id=START, end_id=END, length_penalty=1.0)
    else:  # captions of 1, 2 and 3 tokens: ended rows leave the batch, their maps stop there
        dec = _decoder(AttentionDecoder, seed=1, scale=1.0, end_bias=2.0)
        res = greedy(dec, feats, max_len=7, start_id=START, end_id=END)
        assert set(_lengths(res.tokens).tolist()) == {1, 2, 3}
    assert res.alphas.shape == (*res.tokens.shape, P)
    n = _lengths(res.tokens)
    valid = torch.arange(res.tokens.shape[1]) < n.unsqueeze(1)
    torch.testing.assert_close(res.alphas.sum(-1), valid.double())  # a distribution per word, 0 after
    _, replayed = _replay(dec, feats, res.tokens)
    torch.testing.assert_close(res.alphas, replayed * valid.unsqueeze(-1))
    # not trivially the same maps at every step
    assert (res.alphas[:, 0] - res.alphas[:, 1]).abs().max() > 1e-3


def test_beam_search_stops_early_when_end_wins():
    dec = _decoder(LSTMDecoder)
    with torch.no_grad():  # <end> always wins by far
        dec.out.bias[END] = 1e3
    res = beam_search(dec, _feats(), 3, max_len=10, start_id=START, end_id=END)
    assert res.tokens.shape == (B, 1) and (res.tokens == END).all()


def test_beam_search_rejects_bad_arguments():
    dec = _decoder(RNNDecoder)
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(dec, _feats(), 0, 5, START, END)
    with pytest.raises(ValueError, match="length_penalty"):
        beam_search(dec, _feats(), 2, 5, START, END, length_penalty=-1.0)


@pytest.mark.parametrize("cls", DECODERS)
def test_no_decoding_emits_pad_or_start_and_captions_keep_max_len(cls):
    """<pad> and <start> favoured by far and <end> never: every decoding still emits real
    words only, exactly max_len of them, with log-probs renormalised over the real words."""
    dec = _decoder(cls)
    with torch.no_grad():
        dec.out.bias[0] = dec.out.bias[START] = 50.0
        dec.out.bias[END] = -1e9
    feats = _feats()
    results = {
        "greedy": greedy(dec, feats, 5, START, END),
        "beam": beam_search(dec, feats, 3, 5, START, END),
        "sample": sample(dec, feats, 5, START, END, generator=torch.Generator().manual_seed(0)),
    }
    for name, res in results.items():
        assert res.tokens.shape == (B, 5), name
        assert (res.tokens > END).all(), name  # words only: no <pad>=0, <start>, <end>
        assert torch.isfinite(res.logprob).all() and (res.logprob > -20).all(), name
        _check_consistent(dec, feats, res)


def test_greedy_caption_ending_at_the_limit_keeps_its_end():
    """A caption whose <end> comes right after max_len words is finished, not cut."""
    dec = _decoder(RNNDecoder, scale=3.0, end_bias=1.0)  # ends captions after 1 or 2 words
    feats = _feats(6)
    free = greedy(dec, feats, 12, START, END)
    n = _lengths(free.tokens)
    ended = (free.tokens == END).any(1)
    assert ended.any()
    max_len = int(n[ended].min()) - 1  # the words of the shortest caption
    assert (n > max_len + 1).any()  # and some longer ones to cut
    capped = greedy(dec, feats, max_len, START, END)
    i = int(ended.nonzero()[0])
    assert capped.tokens[i].tolist() == free.tokens[i, : max_len + 1].tolist()
    words = (capped.tokens > END).sum(1)
    assert (words <= max_len).all() and (words == max_len).any()  # the others were cut at max_len


# ----- sampling ---------------------------------------------------------------------------
def _sample(dec, feats, seed, **kw):
    return sample(dec, feats, 7, START, END, generator=torch.Generator().manual_seed(seed), **kw)


@pytest.mark.parametrize("cls", DECODERS)
def test_sampling_is_reproducible_and_diverse(cls):
    dec = _varied(cls)
    feats = _feats()
    a, b = _sample(dec, feats, 0), _sample(dec, feats, 0)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.logprob, b.logprob)
    draws = {tuple(_sample(dec, feats, seed).tokens.flatten().tolist()) for seed in range(5)}
    assert len(draws) > 1
    _check_consistent(dec, feats, a)  # the logprobs are the model's own


@pytest.mark.parametrize("cls", DECODERS)
@pytest.mark.parametrize("kw", [{"temperature": 1e-4}, {"top_k": 1}])
def test_sampling_without_randomness_is_greedy(cls, kw):
    dec = _varied(cls)
    feats = _feats(6)
    s, g = _sample(dec, feats, 0, **kw), greedy(dec, feats, 7, START, END)
    assert torch.equal(s.tokens, g.tokens)
    torch.testing.assert_close(s.logprob, g.logprob)
    if g.alphas is not None:
        torch.testing.assert_close(s.alphas, g.alphas)


def test_top_k_sampling_draws_only_among_the_k_best():
    dec = _decoder(LSTMDecoder)
    feats = _feats()
    for seed in range(5):
        res = _sample(dec, feats, seed, top_k=3, temperature=2.0)
        memory = dec.prepare(feats)
        state = dec.init_state(memory)
        prev = torch.full((B,), START, dtype=torch.long)
        with torch.no_grad():
            for t in range(res.tokens.shape[1]):
                logits, state, _ = dec.step(prev, state, memory)
                alive = res.tokens[:, t] != 0
                top3 = logits.topk(3, dim=-1).indices  # (B, 3)
                assert (top3 == res.tokens[:, t : t + 1]).any(1)[alive].all()
                prev = res.tokens[:, t]


# ----- Captioner.generate dispatch ----------------------------------------------------------
def test_generate_dispatches_to_each_decoding():
    torch.manual_seed(0)
    net = Captioner(SmallCNN(grid=3), AttentionDecoder, vocab_size=V).eval()
    feats = torch.randn(3, 9, net.decoder.feature_dim)
    dec = net.decoder
    torch.testing.assert_close(net.generate(feats, 6, START, END).logprob, greedy(dec, feats, 6, START, END).logprob)
    torch.testing.assert_close(
        net.generate(feats, 6, START, END, beam_size=3, length_penalty=0.7).logprob,
        beam_search(dec, feats, 3, 6, START, END, length_penalty=0.7).logprob,
    )
    kw = {"temperature": 0.8, "top_k": 5}
    torch.testing.assert_close(
        net.generate(feats, 6, START, END, sample=True, generator=torch.Generator().manual_seed(3), **kw).tokens,
        sample(dec, feats, 6, START, END, generator=torch.Generator().manual_seed(3), **kw).tokens,
    )
    with pytest.raises(ValueError, match="sample=True with beam_size=3"):
        net.generate(feats, 6, START, END, beam_size=3, sample=True)
