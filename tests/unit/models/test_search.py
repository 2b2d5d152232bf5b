"""The decoding controls (capgen.models.search.decode with a DecodeSettings) against
independent references: exhaustive enumeration of every caption of a tiny decoder, plain
Python re-implementations, float64 replays through the decoder. Tiny float64 decoders in
eval mode, no dropout."""

import itertools
import math
from collections import Counter

import pytest
import torch

from capgen.models import AttentionDecoder, LSTMDecoder, RNNDecoder, TransformerDecoder
from capgen.models.search import DecodeSettings, NBestResult, beam_search, decode, first_captions

from helpers.replay import replay, sharp_decoder

DECODERS = [RNNDecoder, LSTMDecoder, AttentionDecoder, TransformerDecoder]
P, D = 9, 8
START, END, UNK = 1, 2, 3


def _decoder(cls, **kw):
    return sharp_decoder(cls, D, **kw)


def _feats(n=4, seed=1):
    return torch.randn(n, P, D, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()  # as Captioner.decode: no graph
def _decode(dec, feats, max_len=7, generator=None, **settings):
    return decode(dec, feats, DecodeSettings(max_len=max_len, **settings), START, END, UNK, generator=generator)


def _replay(dec, feats, tokens):
    """(R, L, V) log-probs of every step and the attention maps (helpers.replay)."""
    return replay(dec, feats, tokens, START)


def _rows(result):
    """(R, L) tokens, (R,) logprob, (R, L) token log-probs, alphas, and the image of each row,
    from either result type."""
    if isinstance(result, NBestResult):
        B, N, L = result.tokens.shape
        alphas = result.alphas.reshape(B * N, L, -1) if result.alphas is not None else None
        return (result.tokens.reshape(B * N, L), result.logprob.reshape(-1), result.token_logprobs.reshape(B * N, L),
                alphas, torch.arange(B).repeat_interleave(N))
    return (*result, torch.arange(len(result.tokens)))


def _words(tokens):
    """The words of each caption row (before its <end>), as lists."""
    out = []
    for row in tokens.tolist():
        row = [w for w in row if w != 0]
        out.append(row[: row.index(END)] if END in row else row)
    return out


def _check_consistent(dec, feats, result):
    """Each caption is padded after <end>; its token log-probs are the decoder's own (float64
    replay) and sum to its logprob; its attention maps are those of the replay."""
    tokens, logprob, token_logprobs, alphas, image = _rows(result)
    n = (tokens != 0).sum(1)
    valid = torch.arange(tokens.shape[1]) < n.unsqueeze(1)
    assert (tokens[~valid] == 0).all()
    logp, replayed = _replay(dec, feats[image], tokens)
    own = logp.gather(2, tokens.unsqueeze(2)).squeeze(2).where(valid, 0.0)
    torch.testing.assert_close(token_logprobs.double(), own, rtol=0, atol=1e-5)
    torch.testing.assert_close(token_logprobs.sum(1), logprob)
    if alphas is not None:
        torch.testing.assert_close(alphas, replayed * valid.unsqueeze(-1))


# ----- exhaustive: a vocabulary of 4 words + <end>, captions of at most 4 words ----------------
WORDS_V, WORDS_MAX_LEN = 7, 4  # <pad>, <start>, <end> and the words 3 (<unk>), 4, 5, 6
WORDS = list(range(3, WORDS_V))
EXHAUSTIVE_BEAM = WORDS_V * len(WORDS) ** WORDS_MAX_LEN  # every candidate of the last step: nothing pruned


def _allowed(words, min_len=0, no_repeat_ngram_size=0, suppress_unk=False):
    """Whether a caption (its words) obeys the constraints, checked the plain way."""
    n = no_repeat_ngram_size
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)] if n else []
    return len(words) >= min_len and len(grams) == len(set(grams)) and not (suppress_unk and UNK in words)


def _exhaustive(dec, feats, **constraints):
    """Every finished caption (0..max_len words then <end>) the constraints allow, with its
    float64 log-prob, by stepping the decoder."""
    seqs = [[*c, END] for k in range(WORDS_MAX_LEN + 1) for c in itertools.product(WORDS, repeat=k)
            if _allowed(list(c), **constraints)]
    logps = []
    for k in range(1, WORDS_MAX_LEN + 2):
        group = torch.tensor([s for s in seqs if len(s) == k], dtype=torch.long).view(-1, k)
        if len(group):
            logp, _ = _replay(dec, feats.expand(len(group), -1, -1), group)
            logps.append(logp.gather(2, group.unsqueeze(2)).squeeze(2).sum(1))
    return seqs, torch.cat(logps)  # seqs are in length order, as the groups


CONSTRAINTS = [{}, {"min_len": 3}, {"no_repeat_ngram_size": 1}, {"no_repeat_ngram_size": 2}, {"suppress_unk": True},
               {"min_len": 2, "no_repeat_ngram_size": 2, "suppress_unk": True}]


@pytest.mark.parametrize("cls", DECODERS)
@pytest.mark.parametrize("constraints", CONSTRAINTS, ids=lambda c: ",".join(c) or "none")
def test_n_best_equals_exhaustive_enumeration(cls, constraints):
    """A beam wider than the search space returns exactly the n best captions of all those
    the constraints allow, best first, by raw log-prob and by log-prob / len**alpha."""
    N = 8
    for seed in (0, 1):
        dec = _decoder(cls, seed=seed, vocab=WORDS_V, scale=3.0, end_bias=1.0)
        feats = _feats(1, seed=seed)
        seqs, logps = _exhaustive(dec, feats, **constraints)
        lengths = torch.tensor([len(s) for s in seqs], dtype=torch.float64)
        for alpha in (0.0, 1.0):
            order = (logps / lengths**alpha).argsort(descending=True, stable=True)[:N]
            res = _decode(dec, feats, WORDS_MAX_LEN, method="beam", beam_size=EXHAUSTIVE_BEAM, n_best=N,
                          length_penalty=alpha, **constraints)
            assert isinstance(res, NBestResult) and res.tokens.shape[:2] == (1, N)
            got = [row[: row.index(END) + 1] for row in res.tokens[0].tolist()]
            assert got == [seqs[i] for i in order]
            torch.testing.assert_close(res.logprob[0].double(), logps[order], rtol=0, atol=1e-5)
            # and the 1-best is the single optimum
            one = _decode(dec, feats, WORDS_MAX_LEN, method="beam", beam_size=EXHAUSTIVE_BEAM, length_penalty=alpha,
                          **constraints)
            assert one.tokens[0].tolist()[: len(seqs[order[0]])] == seqs[order[0]]
        _check_consistent(dec, feats, res)


@pytest.mark.parametrize("alpha", [80, 500])
def test_a_large_length_penalty_ranks_as_documented_in_float32(alpha):
    """log-prob / len**alpha, computed as is, underflows in float32 (-5 / 5**80 is -0.: all
    captions would tie) or overflows (5**500): the beam of a float32 decoder must still give
    the n best of an exact (rational) reference."""
    from fractions import Fraction

    N = 8
    dec = _decoder(LSTMDecoder, seed=0, vocab=WORDS_V, scale=3.0, end_bias=1.0)
    feats = _feats(1, seed=0)
    seqs, logps = _exhaustive(dec, feats)
    exact = [Fraction(lp) / len(s) ** alpha for s, lp in zip(seqs, logps.tolist())]
    order = sorted(range(len(seqs)), key=lambda i: exact[i], reverse=True)[:N]
    res = _decode(dec.float(), feats.float(), WORDS_MAX_LEN, method="beam", beam_size=EXHAUSTIVE_BEAM, n_best=N,
                  length_penalty=alpha)
    assert res.logprob.dtype == torch.float32
    assert [row[: row.index(END) + 1] for row in res.tokens[0].tolist()] == [seqs[i] for i in order]


def test_the_constraints_change_the_exhaustive_n_best():
    """The test above has teeth: on its decoders each constraint excludes some of the
    unconstrained 8 best captions."""
    changed = set()
    for cls, seed in itertools.product(DECODERS, (0, 1)):
        dec = _decoder(cls, seed=seed, vocab=WORDS_V, scale=3.0, end_bias=1.0)
        seqs, logps = _exhaustive(dec, _feats(1, seed=seed))
        free = [seqs[i][:-1] for i in logps.argsort(descending=True)[:8]]
        changed |= {i for i, c in enumerate(CONSTRAINTS) if c and not all(_allowed(w, **c) for w in free)}
    assert changed == set(range(1, len(CONSTRAINTS)))


# ----- properties on random decoders -----------------------------------------------------------
METHODS = [
    {"method": "greedy"},
    {"method": "beam", "beam_size": 4, "n_best": 2},
    {"method": "sample", "n_best": 3},
    {"method": "diverse_beam", "beam_size": 4, "groups": 2, "diversity_strength": 1.0, "n_best": 3},
]


def _ngrams(words, n):
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


@pytest.mark.parametrize("cls", DECODERS)
@pytest.mark.parametrize("method", METHODS, ids=lambda m: m["method"])
def test_no_repeated_ngram_when_blocked(cls, method):
    repeats_without = 0
    for seed, n in itertools.product(range(4), (1, 2, 3)):
        dec = _decoder(cls, seed=seed, vocab=9, scale=2.0)  # few words, long captions: repeats are likely
        feats = _feats(5, seed=seed)
        free = _decode(dec, feats, 12, **method)
        repeats_without += sum(len(set(_ngrams(w, n))) < len(_ngrams(w, n)) for w in _words(_rows(free)[0]))
        res = _decode(dec, feats, 12, no_repeat_ngram_size=n, **method)
        for words in _words(_rows(res)[0]):
            assert len(set(_ngrams(words, n))) == len(_ngrams(words, n)), (seed, n, words)
        _check_consistent(dec, feats, res)
    assert repeats_without > 0  # the decoders do repeat when nothing blocks it


@pytest.mark.parametrize("cls", DECODERS)
@pytest.mark.parametrize("method", METHODS, ids=lambda m: m["method"])
def test_unk_is_never_emitted_when_suppressed(cls, method):
    dec = _decoder(cls, unk_bias=3.0)  # <unk> the likeliest word by far
    feats = _feats(6)
    assert (_rows(_decode(dec, feats, **method))[0] == UNK).any()
    res = _decode(dec, feats, suppress_unk=True, **method)
    assert not (_rows(res)[0] == UNK).any()
    _check_consistent(dec, feats, res)  # the log-probs stay the model's own


@pytest.mark.parametrize("cls", DECODERS)
@pytest.mark.parametrize("method", METHODS, ids=lambda m: m["method"])
def test_min_length_holds(cls, method):
    dec = _decoder(cls, end_bias=4.0)  # captions end after a word or two
    feats = _feats(6)
    assert max(map(len, _words(_rows(_decode(dec, feats, **method))[0]))) < 4
    res = _decode(dec, feats, min_len=4, **method)
    assert min(map(len, _words(_rows(res)[0]))) >= 4
    _check_consistent(dec, feats, res)


def test_a_step_where_every_word_is_blocked_may_still_end():
    """Four words and no word twice: a caption has used them all after four words; it ends
    then instead of emitting a blocked word, whatever min_len asks."""
    dec = _decoder(LSTMDecoder, vocab=WORDS_V, end_bias=-5.0)
    feats = _feats(3)
    for method in METHODS:
        res = _decode(dec, feats, 8, no_repeat_ngram_size=1, min_len=6, **method)
        for words in _words(_rows(res)[0]):
            assert sorted(words) == WORDS  # each word once, then <end>
        assert (_rows(res)[0] == END).any(1).all()


@pytest.mark.parametrize("cls", DECODERS)
@pytest.mark.parametrize("n_best", [1, 3])
def test_diverse_beam_with_one_group_equals_beam_search(cls, n_best):
    dec = _decoder(cls, scale=3.0, end_bias=1.0)
    feats = _feats(6)
    diverse = _decode(dec, feats, method="diverse_beam", beam_size=6, groups=1, diversity_strength=2.0, n_best=n_best,
                      length_penalty=0.5)
    beam = _decode(dec, feats, method="beam", beam_size=6, n_best=n_best, length_penalty=0.5)
    for a, b in zip(diverse, beam):
        assert (a is None and b is None) or torch.equal(a, b)


@torch.no_grad()
def _reference_diverse_beam(dec, feats, K, G, strength, max_len, alpha, N):
    """Diverse beam search as beam_search's docstring states it, for one image (1, P, D),
    written the plain way: Python lists of hypotheses per group, one decoder step per
    hypothesis. Returns the N best [(tokens, raw score)]."""
    memory = dec.prepare(feats)
    Kg = K // G
    groups = [[(0.0, [START], dec.init_state(memory))] for _ in range(G)]  # (raw score, tokens, state)
    pool = []  # (normalised score, raw score, tokens) of finished captions, best first
    for t in range(max_len + 1):
        chosen = Counter()  # words the earlier groups' new live beams end in, this step
        for g in range(G):
            cands = []
            for score, toks, state in groups[g]:
                logits, new_state, _ = dec.step(torch.tensor(toks[-1:]), state, memory)
                logits = logits.float()
                logits[0, [0, START]] = -math.inf
                for w, lp in enumerate(logits.log_softmax(-1)[0].tolist()):
                    cands.append((score + lp - strength * chosen[w], score + lp, toks + [w], new_state))
            cands.sort(key=lambda c: -c[0])
            for _, raw, toks, _ in cands[:Kg]:  # <end> counts among the group's Kg best only
                if toks[-1] == END and raw > -math.inf:
                    pool.append((raw / (len(toks) - 1) ** alpha, raw, toks[1:]))
            if t == max_len:
                continue
            groups[g] = [(raw, toks, state) for _, raw, toks, state in cands if toks[-1] != END][:Kg]
            chosen.update(toks[-1] for raw, toks, _ in groups[g] if raw > -math.inf)
        pool = sorted(pool, key=lambda c: -c[0])[:N]
        if t == max_len:
            break
        best_live = max(raw for group in groups for raw, _, _ in group)
        if len(pool) == N and pool[-1][0] >= best_live / (max_len + 1) ** alpha:
            break
    live = sorted(((toks[1:], raw) for group in groups for raw, toks, _ in group), key=lambda c: -c[1])
    return [(toks, raw) for _, raw, toks in pool] + live[: N - len(pool)]


@pytest.mark.parametrize("cls", DECODERS)
@pytest.mark.parametrize(("G", "strength"), [(2, 0.5), (3, 2.0)])
def test_diverse_beam_matches_a_plain_reference(cls, G, strength):
    dec = _decoder(cls, scale=3.0, end_bias=1.0)
    feats = _feats(5)
    K, N = 6, 4
    res = _decode(dec, feats, method="diverse_beam", beam_size=K, groups=G, diversity_strength=strength, n_best=N,
                  length_penalty=1.0)
    for i in range(len(feats)):
        ref = _reference_diverse_beam(dec, feats[i : i + 1], K, G, strength, 7, 1.0, N)
        for j, (tokens, raw) in enumerate(ref):
            assert res.tokens[i, j, : len(tokens)].tolist() == tokens, (i, j)
            assert abs(res.logprob[i, j].item() - raw) < 1e-4
    _check_consistent(dec, feats, res)


@pytest.mark.parametrize("cls", DECODERS)
def test_the_first_beam_step_runs_one_row_per_group(cls, monkeypatch):
    """At the first step a group's beams are all the empty caption: one row each computes it
    (B*G rows), every later step K rows per image still searching."""
    dec = _decoder(cls, scale=3.0, end_bias=1.0)
    rows = []
    step = dec.step
    monkeypatch.setattr(dec, "step", lambda tokens, *a, **kw: rows.append(len(tokens)) or step(tokens, *a, **kw))
    B, K, G = 5, 6, 2
    _decode(dec, _feats(B), method="diverse_beam", beam_size=K, groups=G, diversity_strength=0.5)
    assert rows[0] == B * G and rows[1] == B * K and all(r % K == 0 for r in rows[1:]), rows


def test_diversity_widens_the_words_of_the_n_best():
    """The n best of a diverse beam use more distinct words, and start with more distinct
    words, than those of a plain beam of the same size."""
    dec = _decoder(LSTMDecoder, scale=2.0, end_bias=1.0)
    feats = _feats(8)
    plain = _decode(dec, feats, method="beam", beam_size=4, n_best=4)
    diverse = _decode(dec, feats, method="diverse_beam", beam_size=4, groups=4, diversity_strength=2.0, n_best=4)
    for count in (lambda r, i: r.tokens[i].unique().numel(), lambda r, i: r.tokens[i, :, 0].unique().numel()):
        assert sum(count(diverse, i) for i in range(8)) > sum(count(plain, i) for i in range(8))


@pytest.mark.parametrize("cls", DECODERS)
def test_the_first_of_the_n_best_is_the_1_best(cls):
    dec = _decoder(cls, scale=3.0, end_bias=1.0)
    feats = _feats(6)
    for K in (3, 5):
        one = beam_search(dec, feats, K, 7, START, END, 1.0)
        many = beam_search(dec, feats, K, 7, START, END, 1.0, n_best=K)
        for a, b in zip(one, many.first()):
            assert (a is None and b is None) or torch.equal(a, b)
        assert first_captions(many).tokens.shape == one.tokens.shape
        # best first: finished captions by the ranking score, then unfinished ones by log-prob
        finished = (many.tokens == END).any(2)  # (B, N)
        rank = torch.where(finished, many.logprob.double() / (many.tokens != 0).sum(2), many.logprob.double() - 1e6)
        assert (finished[:, :-1] >= finished[:, 1:]).all() and (rank[:, :-1] >= rank[:, 1:] - 1e-6).all()
        _check_consistent(dec, feats, many)


@pytest.mark.parametrize("method", METHODS[1:], ids=lambda m: m["method"])
def test_n_best_batch_equals_one_image_at_a_time(method):
    """Images leave the batch at different steps; each image's n best do not depend on the others."""
    dec = _decoder(AttentionDecoder, scale=2.0, end_bias=3.0)
    feats = _feats(6)
    kw = {**method, "no_repeat_ngram_size": 2, "suppress_unk": True}
    if method["method"] == "sample":  # draws depend on the batch: compare the layout instead
        kw["top_k"] = 1
    batch = _decode(dec, feats, **kw)
    lengths = (batch.tokens != 0).sum(2)
    assert len(set(lengths.flatten().tolist())) > 1
    for i in range(len(feats)):
        one = _decode(dec, feats[i : i + 1], **kw)
        assert one.tokens.shape[2] == lengths[i].max()
        assert torch.equal(batch.tokens[i, :, : one.tokens.shape[2]], one.tokens[0])
        torch.testing.assert_close(batch.logprob[i], one.logprob[0])


@pytest.mark.parametrize("cls", DECODERS)
def test_the_n_best_of_a_beam_are_distinct_captions(cls):
    """Each hypothesis of a beam is its own path, and a beam finished by its <end> at the
    length limit is not listed again as the same words unfinished."""
    for seed in range(3):
        dec = _decoder(cls, seed=seed, scale=2.0, end_bias=1.0)
        res = _decode(dec, _feats(6, seed=seed), 3, method="beam", beam_size=5, n_best=5)
        for i in range(6):
            words = [tuple(w) for w in _words(res.tokens[i])]
            assert len(set(words)) == 5, words


def test_no_end_fills_the_n_best_with_unfinished_captions():
    dec = _decoder(RNNDecoder)
    with torch.no_grad():
        dec.out.bias[END] = -1e9
    feats = _feats()
    res = _decode(dec, feats, 5, method="beam", beam_size=4, n_best=3)
    assert res.tokens.shape == (4, 3, 5) and not (res.tokens == END).any() and (res.tokens > END).all()
    assert (res.logprob[:, :-1] >= res.logprob[:, 1:]).all()  # best first
    assert len({tuple(c) for c in res.tokens[0].tolist()}) == 3
    _check_consistent(dec, feats, res)


# ----- sampling -------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", DECODERS)
def test_top_k_1_sampling_equals_greedy(cls):
    dec = _decoder(cls, scale=2.0, end_bias=1.0)
    feats = _feats(6)
    for constraints in ({}, {"min_len": 2, "no_repeat_ngram_size": 2, "suppress_unk": True}):
        g = _decode(dec, feats, method="greedy", **constraints)
        s = _decode(dec, feats, method="sample", top_k=1, temperature=3.0, n_best=3, **constraints)
        for j in range(3):
            assert torch.equal(s.tokens[:, j, : g.tokens.shape[1]], g.tokens)
            torch.testing.assert_close(s.logprob[:, j], g.logprob)
            if g.alphas is not None:
                torch.testing.assert_close(s.alphas[:, j, : g.tokens.shape[1]], g.alphas)


def _nucleus64(logp, top_p):
    """The nucleus of each row of float64 log-probs (R, V), computed the plain way: words in
    descending probability, each kept while the mass before it is below top_p."""
    out = []
    for row in logp.exp().tolist():
        kept, mass = set(), 0.0
        for w in sorted(range(len(row)), key=lambda w: -row[w]):
            if mass >= top_p:
                break
            kept.add(w)
            mass += row[w]
        out.append(kept)
    return out


@pytest.mark.parametrize("cls", DECODERS)
def test_top_p_draws_only_from_the_nucleus(cls):
    dec = _decoder(cls, scale=2.0)
    feats = _feats(1, seed=3)
    logp0, _ = _replay(dec, feats, torch.zeros(1, 1, dtype=torch.long))
    mass = logp0[0, 0].exp().sort(descending=True).values.cumsum(0)  # float64
    for k in (1, 3, 6):
        top_p = float(mass[k - 1] + mass[k]) / 2  # the nucleus is the k+1 likeliest, far from any boundary
        res = _decode(dec, feats, 6, method="sample", top_p=top_p, n_best=3000)
        tokens = res.tokens[0]
        # the first words drawn are exactly the nucleus, every member drawn
        assert set(tokens[:, 0].tolist()) == _nucleus64(logp0[0], top_p)[0] and len(_nucleus64(logp0[0], top_p)[0]) == k + 1
        # and every later word lies in the nucleus of its own prefix
        some = tokens[:200]
        logp, _ = _replay(dec, feats.expand(len(some), -1, -1), some)
        for t in range(1, some.shape[1]):
            going = (some[:, t] != 0).nonzero().squeeze(1).tolist()
            nuclei = _nucleus64(logp[going, t], top_p)
            assert all(some[r, t].item() in nucleus for r, nucleus in zip(going, nuclei)), t
        _check_consistent(dec, feats, NBestResult(*(x[:, :200] if x is not None else None for x in res)))


def test_seeded_sampling_is_reproducible():
    dec = _decoder(AttentionDecoder, scale=2.0, end_bias=1.0)
    feats = _feats(4)
    kw = {"method": "sample", "n_best": 4, "top_p": 0.9, "temperature": 1.2}
    a, b, c = _decode(dec, feats, seed=5, **kw), _decode(dec, feats, seed=5, **kw), _decode(dec, feats, seed=6, **kw)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a.tokens[:, :, : c.tokens.shape[2]], c.tokens[:, :, : a.tokens.shape[2]])
    assert len({tuple(r) for r in a.tokens[0].tolist()}) > 1  # the n draws of an image differ
    # A generator given draws from its own stream, continued across calls.
    gen = torch.Generator().manual_seed(5)
    assert all(torch.equal(x, y) for x, y in zip(a, _decode(dec, feats, generator=gen, **kw)))
    assert not torch.equal(a.tokens, _decode(dec, feats, generator=gen, **kw).tokens)


def test_n_samples_per_image_are_draws_from_the_repeated_image():
    """The layout of n draws: caption j of image b is row b*n + j of a batch in which every
    image is repeated n times (and the image's decoder work is shared, not repeated)."""
    dec = _decoder(AttentionDecoder, scale=2.0, end_bias=1.0)
    feats = _feats(3)
    res = _decode(dec, feats, method="sample", n_best=4, seed=2)
    flat = _decode(dec, feats.repeat_interleave(4, dim=0), method="sample", seed=2)
    assert torch.equal(res.tokens.reshape(12, -1), flat.tokens)
    torch.testing.assert_close(res.alphas.reshape(12, *flat.alphas.shape[1:]), flat.alphas)


# ----- settings -------------------------------------------------------------------------------
BAD_SETTINGS = [
    ({"method": "nucleus"}, r"decode\.method='nucleus': choose one of greedy, beam, sample, diverse_beam"),
    ({"method": "sample", "top_p": 1.5}, r"decode\.top_p=1\.5: give a probability mass in \(0, 1\]"),
    ({"method": "sample", "top_p": 0.0}, r"decode\.top_p=0\.0: "),
    ({"method": "beam", "beam_size": 3, "n_best": 5}, r"decode\.n_best=5: a beam of decode\.beam_size=3 returns at most 3"),
    ({"method": "greedy", "n_best": 2}, r"decode\.n_best=2: greedy decoding gives one caption per image"),
    ({"method": "diverse_beam", "beam_size": 5, "groups": 2}, r"decode\.groups=2: the groups split the beam evenly"),
    ({"method": "beam", "beam_size": 4, "groups": 2}, r"decode\.groups=2: only decode\.method=diverse_beam reads it"),
    ({"method": "beam", "beam_size": 4, "temperature": 0.7}, r"decode\.temperature=0\.7: only decode\.method=sample"),
    ({"method": "beam", "beam_size": 4, "top_k": 5}, r"decode\.top_k=5: only decode\.method=sample"),
    ({"method": "greedy", "length_penalty": 0.5}, r"decode\.length_penalty=0\.5: it ranks the hypotheses of a beam"),
    ({"min_len": 9, "max_len": 5}, r"decode\.min_len=9: longer than decode\.max_len=5"),
    ({"beam_size": 0}, r"decode\.beam_size=0: a beam holds at least 1 caption"),
    ({"method": "sample", "temperature": 0}, r"decode\.temperature=0: give a temperature > 0"),
    ({"no_repeat_ngram_size": -1}, r"decode\.no_repeat_ngram_size=-1: "),
    ({"suppress_unk": "yes"}, r"decode\.suppress_unk='yes': give true or false"),
    ({"beam_size": 2.5}, r"decode\.beam_size=2\.5: give a whole number"),
    ({"method": "beam", "beam_size": 3, "length_penalty": 1001}, r"decode\.length_penalty=1001: give a value from 0 to 1000"),
    ({"method": "beam", "beam_size": 3, "seed": 2**64}, r"decode\.seed=18446744073709551616: give a whole number from -2\*\*63 to 2\*\*64-1"),
    ({"method": "sample", "seed": -(2**63) - 1}, r"decode\.seed=-9223372036854775809: give a whole number from"),
]


@pytest.mark.parametrize(("values", "message"), BAD_SETTINGS)
def test_settings_errors_name_the_key_value_and_fix(values, message):
    with pytest.raises(ValueError, match="^" + message) as err:
        DecodeSettings(**values)
    assert "\n" not in str(err.value)
    where = "model.module.test.decode"
    with pytest.raises(ValueError, match="^" + message.replace(r"decode\.", re_escape(where) + r"\.")):
        DecodeSettings.from_config(values, where=where)


def re_escape(text):
    import re

    return re.escape(text)


def test_settings_from_a_config_node():
    s = DecodeSettings.from_config({"method": "sample", "top_p": 1, "temperature": 2})
    assert (s.top_p, s.temperature) == (1.0, 2.0) and isinstance(s.top_p, float)
    with pytest.raises(ValueError, match=r"^decode\.beam: no such decoding setting; the settings are method, beam_size"):
        DecodeSettings.from_config({"beam": 3})
    # A node switched to sampling may keep the beam it was given.
    assert DecodeSettings(method="sample", beam_size=3).beam_size == 3
    assert DecodeSettings(method="beam", beam_size=3).with_max_len(20).max_len == 20
    with pytest.raises(ValueError, match=r"^decode\.max_len=30: the model was trained on captions of at most 20 words"):
        DecodeSettings(max_len=30).with_max_len(20)
    with pytest.raises(ValueError, match=r"^x\.min_len=25: longer than the longest caption, 20 words"):
        DecodeSettings(min_len=25).with_max_len(20, where="x")
    assert DecodeSettings(method="beam", beam_size=3).describe() == "beam 3"
    assert DecodeSettings(method="sample", top_p=0.9).describe() == "sample, top_p 0.9, seed 0"
    for seed in (-(2**63), 2**64 - 1):  # the range's ends seed a generator
        torch.Generator().manual_seed(DecodeSettings(method="sample", seed=seed).seed)


def test_decode_settings_built_in_code_refuse_nan_too():
    from capgen.models.search.settings import DecodeSettings

    with pytest.raises(ValueError, match=r"decode\.length_penalty=nan: give a finite number"):
        DecodeSettings(method="beam", beam_size=3, length_penalty=float("nan"))


def test_categorical_draws_each_word_as_often_as_its_probability_and_never_a_zero_one():
    from capgen.models.search.stepwise import categorical

    probs = torch.tensor([[0.0, 0.5, 0.0, 0.3, 0.2, 0.0], [0.9, 0.0, 0.0, 0.0, 0.0, 0.1], [0.0] * 5 + [1.0]])
    rows = probs.repeat(20_000, 1)  # (60000, 6): 20,000 draws per distribution
    g = torch.Generator().manual_seed(0)
    drawn = categorical(rows, g).view(20_000, 3)
    assert torch.equal(drawn, categorical(rows, torch.Generator().manual_seed(0)).view(20_000, 3))  # the generator decides
    for r in range(3):
        counts = torch.bincount(drawn[:, r], minlength=6).double()
        assert (counts[probs[r] == 0] == 0).all()  # a word of probability 0 is never drawn
        freq, p = counts / 20_000, probs[r].double()
        # binomial standard error at most 0.0036 here: 5 of them
        assert (freq - p).abs().max() < 5 * (p * (1 - p) / 20_000).sqrt().max() + 1e-12, (r, freq, p)
