"""Self-critical training (capgen.models.scst): baselines, what runs without gradients, and the
gradient of a step against a plain float64 computation on a tiny model."""

import pytest
import torch

from capgen.models import AttentionDecoder, Captioner, LSTMDecoder, RNNDecoder, TransformerDecoder, scst
from capgen.models.scst import mean_baseline, self_critical_step

from helpers.replay import tiny_sizes

DECODERS = [RNNDecoder, LSTMDecoder, AttentionDecoder, TransformerDecoder]
V, B, P, D, N_SAMPLES, MAX_LEN = 9, 3, 4, 6, 4, 5
START, END = 1, 2


class _Features(torch.nn.Module):
    """A stand-in encoder: the captioner is given features (B, P, D) directly."""

    out_dim, grid = D, 2


def _net(cls, dropout: float = 0.0) -> Captioner:
    torch.manual_seed(0)

    def decoder(**kw):
        return cls(dropout=dropout, **tiny_sizes(cls), **kw)

    return Captioner(_Features(), decoder, vocab_size=V).double()


def _reward(image_ids: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """A reward that depends on the image and the words: sum of (id + image id) mod 5 per token."""
    return (((tokens + image_ids[:, None]) % 5) * (tokens != 0)).sum(1).double()


def _inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randn(B, P, D, dtype=torch.float64, generator=g), torch.tensor([10, 11, 12])


def test_mean_baseline_is_the_mean_of_the_other_samples_and_advantages_sum_to_zero():
    rewards = torch.rand(4, 5, dtype=torch.float64)
    expected = torch.stack([torch.stack([torch.cat([r[:j], r[j + 1 :]]).mean() for j in range(5)]) for r in rewards])
    torch.testing.assert_close(mean_baseline(rewards), expected, rtol=1e-12, atol=1e-12)

    feats, ids = _inputs()
    out = self_critical_step(_net(LSTMDecoder), feats, ids, _reward, START, END, MAX_LEN, N_SAMPLES, "mean")
    assert out.advantage.shape == (B, N_SAMPLES) and out.advantage.abs().sum() > 0
    torch.testing.assert_close(out.advantage.sum(1), torch.zeros(B, dtype=out.advantage.dtype), atol=1e-5, rtol=0)


@pytest.mark.parametrize("baseline", ["mean", "greedy"])
def test_only_the_samplers_log_probabilities_carry_gradients(monkeypatch, baseline):
    """The loss differentiates the sampler's own log-probabilities (no second pass); the
    greedy baseline's decode builds no graph, nor do the words, rewards and advantages."""
    seen = []

    def spy(fn):
        def wrapped(*args, **kw):
            result = fn(*args, **kw)
            seen.append((fn.__name__, result.logprob.requires_grad, result.tokens.requires_grad))
            return result
        return wrapped

    monkeypatch.setattr(scst.search, "sample", spy(scst.search.sample))
    monkeypatch.setattr(scst.search, "greedy", spy(scst.search.greedy))
    feats, ids = _inputs()
    feats.requires_grad_(True)  # as an encoder's output would
    out = self_critical_step(_net(AttentionDecoder), feats, ids, _reward, START, END, MAX_LEN, N_SAMPLES, baseline)
    assert seen == ([("sample", True, False), ("greedy", False, False)] if baseline == "greedy" else
                    [("sample", True, False)])
    for t in (out.reward, out.baseline, out.advantage, out.tokens):
        assert not t.requires_grad and t.grad_fn is None
    assert out.logprob.requires_grad and out.loss.requires_grad


def test_greedy_baseline_decodes_in_eval_mode_and_leaves_the_modes_as_they_were():
    net = _net(LSTMDecoder, dropout=0.5).train()
    feats, ids = _inputs()
    out = self_critical_step(net, feats, ids, _reward, START, END, MAX_LEN, N_SAMPLES, "greedy")
    assert all(m.training for m in net.modules())
    net.eval()
    with torch.no_grad():
        greedy = scst.search.greedy(net.decoder, feats, MAX_LEN, START, END)
    expected = _reward(ids, greedy.tokens).float().unsqueeze(1).expand(B, N_SAMPLES)
    torch.testing.assert_close(out.baseline, expected)


def _reference_logprob(decoder, feats: torch.Tensor, caption: torch.Tensor) -> torch.Tensor:
    """Sum of log-probabilities of one caption (its tokens up to and with its <end>), stepping
    the decoder word by word: log_softmax over the words the sampler draws from (not <pad>,
    <start>), gathered at each emitted token."""
    memory = decoder.prepare(feats[None])
    state = decoder.init_state(memory)
    token, total = torch.tensor([START]), torch.zeros((), dtype=torch.float64)
    for w in caption.tolist():
        if w == 0:
            break
        logits, state, _ = decoder.step(token, state, memory)
        logits = logits[0].clone()
        logits[[0, START]] = float("-inf")
        total = total + torch.log_softmax(logits, dim=-1)[w]
        token = torch.tensor([w])
    return total


@pytest.mark.parametrize("cls", DECODERS)
@pytest.mark.parametrize("baseline", ["mean", "greedy"])
def test_step_gradient_equals_a_plain_float64_computation(cls, baseline):
    """loss = -mean over the B*n captions of advantage * (sum of the caption's token
    log-probabilities, <end> included): the value and every parameter's gradient."""
    net = _net(cls)
    feats, ids = _inputs()
    feats.requires_grad_(True)  # the encoder's share of the gradient flows through the features
    torch.manual_seed(5)
    out = self_critical_step(net, feats, ids, _reward, START, END, MAX_LEN, N_SAMPLES, baseline)
    assert (out.tokens == END).any(1).any() and out.tokens.shape[0] == B * N_SAMPLES
    net.zero_grad()
    feats.grad = None
    out.loss.backward()
    got = {name: p.grad.clone() for name, p in net.named_parameters()} | {"features": feats.grad.clone()}

    net.zero_grad()
    feats.grad = None
    advantage = out.advantage.double().reshape(-1)
    terms = [advantage[i] * _reference_logprob(net.decoder, feats[i // N_SAMPLES], out.tokens[i])
             for i in range(B * N_SAMPLES)]
    reference = -torch.stack(terms).mean()
    reference.backward()
    torch.testing.assert_close(out.loss, reference, rtol=1e-10, atol=1e-12)
    for name, p in [*net.named_parameters(), ("features", feats)]:
        assert got[name].abs().sum() > 0 or name.startswith("decoder.embed"), name
        torch.testing.assert_close(got[name], p.grad, rtol=1e-9, atol=1e-12, msg=name)


@pytest.mark.parametrize("baseline", ["mean", "greedy"])
def test_the_image_work_runs_once_per_image_for_all_samples_and_the_baseline(baseline):
    """One encoder pass and one projection of the grid (prepare) on the B images serve the
    sampler, the greedy baseline and the teacher-forced pass; the samples are those drawn
    from the features repeated n times, the draws unchanged."""
    net = _net(AttentionDecoder)
    feats, ids = _inputs()
    encoded, projected = [], []
    net.encode = lambda images, encode=net.encode: encoded.append(len(images)) or encode(images)
    net.decoder.feat_att.register_forward_hook(lambda m, args, out: projected.append(args[0].shape[0]))
    torch.manual_seed(5)
    out = self_critical_step(net, feats, ids, _reward, START, END, MAX_LEN, N_SAMPLES, baseline)
    assert encoded == [B] and projected == [B]
    torch.manual_seed(5)
    repeated = scst.search.sample(net.decoder, feats.repeat_interleave(N_SAMPLES, 0), MAX_LEN, START, END)
    assert torch.equal(out.tokens, repeated.tokens)


def test_bad_settings_name_the_setting():
    with pytest.raises(ValueError, match=r"model\.module\.objective\.scst\.samples=1 with model\.module\.objective\.scst\.baseline=mean"):
        scst.check_scst_settings(1, "mean", None)
    with pytest.raises(ValueError, match=r"model\.module\.objective\.scst\.baseline='beam'"):
        scst.check_scst_settings(5, "beam", None)
    with pytest.raises(ValueError, match=r"model\.module\.objective\.scst\.max_len=0"):
        scst.check_scst_settings(5, "mean", 0)
