import pytest
import torch

from capgen.models import AttentionDecoder, Captioner, LSTMDecoder, RNNDecoder, SmallCNN, TorchvisionEncoder
from capgen.models.losses import caption_loss, doubly_stochastic
from capgen.models.search import greedy

DECODERS = [RNNDecoder, LSTMDecoder, AttentionDecoder]
V, B, T, P, D = 17, 3, 6, 9, 8


def _decoder(cls):
    torch.manual_seed(0)
    return cls(vocab_size=V, feature_dim=D, embed_dim=5, hidden_dim=7, dropout=0.0).double().eval()


@pytest.mark.parametrize("cls", DECODERS)
def test_teacher_forced_forward_equals_step_by_step(cls):
    dec = _decoder(cls)
    feats = torch.randn(B, P, D, dtype=torch.float64)
    inputs = torch.randint(0, V, (B, T))
    logits, alphas = dec(feats, inputs)
    memory = dec.prepare(feats)
    state = dec.init_state(memory)
    for t in range(T):
        step_logits, state, alpha = dec.step(inputs[:, t], state, memory)
        torch.testing.assert_close(step_logits, logits[:, t], rtol=1e-10, atol=1e-10)
        if alphas is not None:
            torch.testing.assert_close(alpha, alphas[:, t], rtol=1e-10, atol=1e-10)
    assert (alphas is not None) == cls.has_attention


def test_attention_weights_are_a_distribution_over_cells():
    dec = _decoder(AttentionDecoder)
    _, alphas = dec(torch.randn(B, P, D, dtype=torch.float64), torch.randint(0, V, (B, T)))
    assert alphas.shape == (B, T, P)
    assert (alphas >= 0).all()
    torch.testing.assert_close(alphas.sum(-1), torch.ones(B, T, dtype=torch.float64))
    # different images/steps attend differently (the weights are not a constant)
    assert alphas.std() > 0


def test_attention_depends_on_image_features():
    dec = _decoder(AttentionDecoder)
    feats = torch.randn(1, P, D, dtype=torch.float64)
    inputs = torch.randint(0, V, (1, T))
    _, a1 = dec(feats, inputs)
    feats2 = feats.clone()
    feats2[0, 4] += 5.0  # make one cell stand out
    _, a2 = dec(feats2, inputs)
    assert not torch.allclose(a1, a2)


def test_masked_loss_ignores_padding():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, V, dtype=torch.float64)
    targets = torch.tensor([[4, 5, 2, 0, 0], [6, 7, 8, 9, 2]])
    loss = caption_loss(logits, targets)
    # float64 reference: mean of -log softmax over the 8 real tokens only
    logp = logits.log_softmax(-1)
    real = [(b, t) for b in range(2) for t in range(5) if targets[b, t] != 0]
    expected = -sum(logp[b, t, targets[b, t]] for b, t in real) / len(real)
    torch.testing.assert_close(loss, expected.float() if loss.dtype == torch.float32 else expected)
    # changing logits at padded positions changes nothing
    logits2 = logits.clone()
    logits2[0, 3:] = 100 * torch.randn(2, V, dtype=torch.float64)
    torch.testing.assert_close(caption_loss(logits2, targets), loss)


def test_doubly_stochastic_regulariser_matches_formula():
    alphas = torch.softmax(torch.randn(2, 4, 3, dtype=torch.float64), -1)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    expected = sum(
        sum((1 - sum(alphas[b, t, p] for t in range(4) if mask[b, t])) ** 2 for p in range(3)) for b in range(2)
    ) / 2
    torch.testing.assert_close(doubly_stochastic(alphas, mask).double(), expected)


@pytest.mark.parametrize("cls", DECODERS)
def test_greedy_decoding_picks_argmax_and_pads_after_end(cls):
    dec = _decoder(cls)
    feats = torch.randn(B, P, D, dtype=torch.float64)
    res = greedy(dec, feats, max_len=7, start_id=1, end_id=2)
    assert res.tokens.shape[0] == B and res.tokens.shape[1] <= 8
    # replay: every emitted token is the argmax given the previous ones
    memory = dec.prepare(feats)
    state = dec.init_state(memory)
    prev = torch.ones(B, dtype=torch.long)
    for t in range(res.tokens.shape[1]):
        logits, state, _ = dec.step(prev, state, memory)
        alive = torch.ones(B, dtype=torch.bool) if t == 0 else ~(res.tokens[:, :t] == 2).any(1)
        assert torch.equal(res.tokens[alive, t], logits.argmax(-1)[alive])
        assert (res.tokens[~alive, t] == 0).all()
        prev = res.tokens[:, t]


def test_greedy_stops_early_when_all_captions_end():
    dec = _decoder(LSTMDecoder)
    with torch.no_grad():  # force <end> to always win
        dec.out.bias.fill_(0)
        dec.out.bias[2] = 1e6
    res = greedy(dec, torch.randn(B, P, D, dtype=torch.float64), max_len=10, start_id=1, end_id=2)
    assert res.tokens.shape == (B, 1) and (res.tokens == 2).all()


def test_captioner_shapes_small_cnn():
    net = Captioner(SmallCNN(grid=6), AttentionDecoder, vocab_size=V)
    images = torch.randint(0, 256, (2, 3, 96, 96), dtype=torch.uint8)
    logits, alphas = net(images, torch.randint(0, V, (2, 5)))
    assert logits.shape == (2, 5, V) and alphas.shape == (2, 5, 36)


def test_torchvision_encoder_truncates_pools_and_freezes():
    enc = TorchvisionEncoder("resnet18", weights=None, grid=3, finetune="last", finetune_last=1)
    out = enc(torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8))
    assert out.shape == (1, 512, 3, 3) and enc.out_dim == 512
    trainable = {n.split(".")[1] for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable == {str(len(enc.body) - 1)}  # only the last stage (layer4)
    enc.train()
    assert not enc.body[1].training and enc.body[-1].training  # frozen BatchNorm stays in eval
    assert len(enc.state_dict()) == len(dict(enc.body.named_parameters())) + len(dict(enc.body.named_buffers()))


def test_torchvision_encoder_offline_weights_error_names_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"resnet18-.*\.pth.*TORCH_HOME"):
        TorchvisionEncoder("resnet18", weights="IMAGENET1K_V1")
    with pytest.raises(ValueError, match="IMAGENET1K_V1"):
        TorchvisionEncoder("resnet18", weights="NOPE")
    with pytest.raises(ValueError, match="not a torchvision model"):
        TorchvisionEncoder("resnet9999")


def test_torchvision_encoder_loads_weights_file_from_torch_home(tmp_path, monkeypatch):
    """The real loading path: a weight file placed where torch looks is used, no download."""
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    src = torchvision.models.resnet18()
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    path = tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[1]
    path.parent.mkdir(parents=True)
    torch.save(src.state_dict(), path)
    enc = TorchvisionEncoder("resnet18", weights="IMAGENET1K_V1", grid=2)
    torch.testing.assert_close(enc.body[0].weight, src.conv1.weight)
    # The dry run that finds the feature width runs in eval mode: it used to run in train mode,
    # moving the pretrained BatchNorm statistics 10% towards those of a black image.
    for name, value in src.bn1.state_dict().items():
        assert torch.equal(enc.body[1].state_dict()[name], value), name


def test_greedy_token_logprobs_sum_to_the_caption_logprob():
    dec = _decoder(AttentionDecoder)
    res = greedy(dec, torch.randn(B, P, D, dtype=torch.float64), max_len=7, start_id=1, end_id=2)
    assert res.token_logprobs.shape == res.tokens.shape
    torch.testing.assert_close(res.token_logprobs.sum(1).double(), res.logprob.double())
    assert (res.token_logprobs[res.tokens == 0] == 0).all() and (res.token_logprobs <= 0).all()
