"""Training-recipe options of CaptioningModule: label smoothing, scheduled sampling, the step and
plateau schedules' settings, pretrained word vectors, and their range errors."""

import logging
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from capgen.data.datamodule import Batch
from capgen.lightning.module import CaptioningModule
from capgen.lightning.optimization import lr_scheduler
from capgen.models import AttentionDecoder, Captioner, LSTMDecoder, RNNDecoder, SmallCNN
from capgen.models.losses import caption_loss
from capgen.models.scheduled_sampling import sampled_forward, sampling_probability
from capgen.models.word_vectors import load_word_vectors, read_word_vectors
from capgen.vocab import SPECIALS, Vocabulary

from helpers.fakes import tiny_vocab

DECODERS = [RNNDecoder, LSTMDecoder, AttentionDecoder]
WORDS = ["dog", "cat", "red", "ball", "on", "grass", "a", "the"]
VOCAB = Vocabulary([*SPECIALS, *WORDS], max_len=8)
V, P, D = len(VOCAB), 4, 6
OWN = VOCAB.stoi["ball"]  # the word a rigged model always says


# ----- label smoothing ----------------------------------------------------------------------
@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_label_smoothing_is_the_smoothed_cross_entropy_of_the_real_tokens_only(eps):
    torch.manual_seed(0)
    logits = torch.randn(3, 5, V, dtype=torch.float64)
    targets = torch.tensor([[4, 5, 2, 0, 0], [6, 7, 8, 9, 2], [10, 2, 0, 0, 0]])
    loss = caption_loss(logits, targets, pad_id=0, label_smoothing=eps)
    # float64, by the definition: (1 - eps) * -log p(target) + eps * mean over the V words of -log p(v),
    # averaged over the real (non-pad) tokens
    logp = logits.log_softmax(-1)
    real = [(b, t) for b in range(3) for t in range(5) if targets[b, t] != 0]
    expected = sum((1 - eps) * -logp[b, t, targets[b, t]] - eps * logp[b, t].mean() for b, t in real) / len(real)
    assert loss.dtype == torch.float64  # float64 logits keep their precision (float16/bf16 ones are widened)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)
    # ... which is torch's label_smoothing on those tokens alone
    keep = targets.flatten() != 0
    torch.testing.assert_close(loss, F.cross_entropy(logits.flatten(0, 1)[keep], targets.flatten()[keep],
                                                     label_smoothing=eps))
    # padding positions still count for nothing
    noisy = logits.clone()
    noisy[0, 3:] = 50 * torch.randn(2, V, dtype=torch.float64)
    torch.testing.assert_close(caption_loss(noisy, targets, 0, eps), loss)


# ----- scheduled sampling -------------------------------------------------------------------
def test_sampling_probability_ramps_linearly_from_the_start_epoch_to_its_highest():
    table = [sampling_probability(e, 0.25, start=2, ramp=4) for e in range(8)]
    assert table == [0.0, 0.0, 0.0625, 0.125, 0.1875, 0.25, 0.25, 0.25]
    assert [sampling_probability(e, 1.0, 0, 1) for e in range(3)] == [1.0, 1.0, 1.0]
    assert [sampling_probability(e, 0.0, 0, 1) for e in range(3)] == [0.0, 0.0, 0.0]


def _net(cls, dropout=0.0):
    torch.manual_seed(0)
    return Captioner(SmallCNN(widths=(4,), grid=2), lambda **kw: cls(**kw, embed_dim=5, hidden_dim=7, dropout=dropout),
                     vocab_size=V)


def _features(n):
    return torch.randn(n, P, 4)  # (B, P, D) float features: the encoder does not run


def _captions(n, T=7, seed=0):
    """<start> words <end> <pad>..., rows of different lengths."""
    g = torch.Generator().manual_seed(seed)
    caps = torch.zeros(n, T, dtype=torch.long)
    for i in range(n):
        length = 2 + i % (T - 2)
        caps[i, 0] = VOCAB.start_id
        caps[i, 1:length] = torch.randint(len(SPECIALS), V, (length - 1,), generator=g)
        caps[i, length] = VOCAB.end_id
    return caps


def _module(cls, **objective):
    return CaptioningModule(_net(cls, dropout=0.3), VOCAB, scheduler={"name": "none"}, objective=objective).train()


class StepSpy:
    """Records the tokens every decoder.step call is fed."""

    def __init__(self, decoder):
        self.fed, self._step = [], decoder.step
        decoder.step = self

    def __call__(self, tokens, state, memory, rows=None):
        self.fed.append(tokens.clone())
        return self._step(tokens, state, memory, rows)


@pytest.mark.parametrize("cls", DECODERS)
def test_scheduled_sampling_at_probability_0_is_bit_identical_teacher_forcing_on_the_fast_path(cls):
    captions = _captions(6)
    batch = Batch(_features(6), captions, (captions != 0).sum(1), torch.arange(6))
    plain = _module(cls)
    torch.manual_seed(1)
    expected = plain._loss(batch)
    # Sampling set up but at probability 0 in this epoch (it starts at epoch 3).
    later = _module(cls, scheduled_sampling={"probability": 1.0, "start": 3})
    spy = StepSpy(later.net.decoder)
    torch.manual_seed(1)
    got = later._loss(batch)
    assert spy.fed == []  # the teacher-forced fused forward ran, not the step loop
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


@pytest.mark.parametrize("p", [0.0, 0.5])
@pytest.mark.parametrize("cls", DECODERS)
def test_a_batch_of_several_captions_per_image_trains_as_its_images_repeated(cls, p):
    """data.train_captions_per_image=3: the loss (teacher forcing, and scheduled sampling's step loop
    with the same draws) and its gradients equal those of each image repeated for its captions."""
    captions = _captions(12)
    feats = _features(4).double()
    shared = Batch(feats, captions, (captions != 0).sum(1), torch.arange(4))
    repeated = Batch(feats.repeat_interleave(3, 0), captions, (captions != 0).sum(1), torch.arange(4).repeat_interleave(3))
    assert shared.captions_per_image == 3 and repeated.captions_per_image == 1
    results = []
    for batch in (shared, repeated):
        module = CaptioningModule(_net(cls).double(), VOCAB, scheduler={"name": "none"},
                                  objective={"scheduled_sampling": {"probability": p, "start": 0}, "alpha_c": 1.0}).train()
        torch.manual_seed(3)
        loss, _ = module._loss(batch)
        loss.backward()
        results.append((loss, {n: q.grad for n, q in module.named_parameters() if q.grad is not None}))
    (loss, grads), (ref_loss, ref_grads) = results
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=0)
    assert grads.keys() == ref_grads.keys() and len(grads) > 3
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-9, atol=1e-12, msg=name)


def _rigged(cls):
    """A model that says OWN almost surely whatever it is fed."""
    net = _net(cls)
    out = net.decoder.out
    with torch.no_grad():
        out.weight.zero_()
        out.bias.fill_(-20.0)
        out.bias[OWN] = 20.0
    return net


@pytest.mark.parametrize("cls", DECODERS)
def test_scheduled_sampling_at_probability_1_feeds_only_the_models_own_words(cls):
    net = _rigged(cls)
    feats, captions = _features(5), _captions(5)
    inputs = captions[:, :-1]
    spy = StepSpy(net.decoder)
    torch.manual_seed(2)
    logits, _ = sampled_forward(net, feats, inputs, 1.0, VOCAB.start_id)
    fed = torch.stack(spy.fed, dim=1)  # (B, T)
    assert torch.equal(fed[:, 0], inputs[:, 0])  # <start>
    going = inputs[:, 1:] != 0
    assert (fed[:, 1:][going] == OWN).all()  # every later input is the model's word
    assert (fed[:, 1:][~going] == 0).all()  # ended captions stay padding
    # The references after <start> do not matter at all: other words, the same logits.
    other = inputs.clone()
    other[:, 1:][going] = (other[:, 1:][going] - len(SPECIALS) + 1) % (V - len(SPECIALS)) + len(SPECIALS)
    torch.manual_seed(2)
    again, _ = sampled_forward(net, feats, other, 1.0, VOCAB.start_id)
    assert torch.equal(again, logits)


def test_scheduled_sampling_draws_the_models_word_with_the_given_probability_and_from_its_distribution():
    net = _rigged(LSTMDecoder)
    captions = _captions(200, T=9)
    inputs = captions[:, :-1]
    spy = StepSpy(net.decoder)
    torch.manual_seed(3)
    sampled_forward(net, _features(200), inputs, 0.3, VOCAB.start_id)
    fed = torch.stack(spy.fed, dim=1)[:, 1:]
    going = (inputs[:, 1:] != 0) & (inputs[:, 1:] != OWN)
    share = (fed[going] == OWN).double().mean().item()
    n = int(going.sum())
    assert abs(share - 0.3) < 4 * (0.3 * 0.7 / n) ** 0.5  # binomial: within 4 standard errors
    assert ((fed[going] == OWN) | (fed[going] == inputs[:, 1:][going])).all()  # own word or the reference

    # Drawn from the model's distribution: a model split evenly between two words feeds both.
    with torch.no_grad():
        net.decoder.out.bias[VOCAB.stoi["red"]] = 20.0
    spy.fed.clear()
    sampled_forward(net, _features(200), inputs, 1.0, VOCAB.start_id)
    fed = torch.stack(spy.fed, dim=1)[:, 1:][inputs[:, 1:] != 0]
    share_red = (fed == VOCAB.stoi["red"]).double().mean().item()
    assert ((fed == OWN) | (fed == VOCAB.stoi["red"])).all() and abs(share_red - 0.5) < 4 * (0.25 / fed.numel()) ** 0.5


@pytest.mark.parametrize("cls", DECODERS)
def test_scheduled_sampling_trains_through_the_step_loop(cls):
    captions = _captions(4)
    batch = Batch(_features(4), captions, (captions != 0).sum(1), torch.arange(4))
    module = _module(cls, scheduled_sampling={"probability": 0.5})
    loss, _ = module._loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and module.net.decoder.embed.weight.grad.abs().sum() > 0


# ----- schedules: the scheduler each setting builds --------------------------------------------
def _schedule(lr, **scheduler):
    module = CaptioningModule(_net(LSTMDecoder), VOCAB, optimizer={"lr": lr}, scheduler=scheduler)
    optimizer = torch.optim.AdamW(module.parameters(), lr=module.hparams.optimizer["lr"])
    return optimizer, lr_scheduler(optimizer, module.scheduler_settings)


def test_step_schedule_cuts_the_rate_every_n_epochs():
    optimizer, config = _schedule(name="step", lr=1.0, step_epochs=3, decay=0.5)
    assert config["interval"] == "epoch"
    rates = []
    for _ in range(8):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        config["scheduler"].step()
    assert rates == [1.0] * 3 + [0.5] * 3 + [0.25] * 2


def test_plateau_schedule_follows_the_runs_monitor_and_mode():
    optimizer, config = _schedule(name="plateau", lr=1.0, patience=1, decay=0.1, monitor="val/loss", mode="min")
    assert (config["monitor"], config["interval"]) == ("val/loss", "epoch")
    rates = []
    for value in (5.0, 4.0, 4.5, 4.2, 4.1, 3.0, 3.5):  # improves, improves, then 3 without, then better
        config["scheduler"].step(value)
        rates.append(round(optimizer.param_groups[0]["lr"], 12))
    # patience 1: the second validation in a row without improvement cuts the rate
    assert rates == [1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 0.1]


# ----- pretrained word vectors --------------------------------------------------------------
def _glove(tmp_path, dim=5, header=False):
    """A GloVe-format file with some of VOCAB's words (one repeated), others it lacks, and words
    VOCAB lacks; returns the path and {word: vector} of the first line of each word."""
    g = torch.Generator().manual_seed(4)
    lines, vectors = ["3 5"] if header else [], {}
    for word in ["the", "zebra", "dog", "red", "xylophone", "dog", "<unk>"]:
        vector = torch.randn(dim, generator=g)
        vectors.setdefault(word, vector)
        lines.append(word + " " + " ".join(f"{x:.6f}" for x in vector.tolist()))
    path = tmp_path / "glove.txt"
    path.write_text("\n".join(lines) + "\n")
    return path, {w: torch.tensor([float(f"{x:.6f}") for x in v.tolist()]) for w, v in vectors.items()}


@pytest.mark.parametrize("header", [False, True])
def test_word_vectors_load_for_the_words_present_and_are_counted(tmp_path, caplog, header):
    path, vectors = _glove(tmp_path, header=header)
    embedding = torch.nn.Embedding(V, 5, padding_idx=0)
    before = embedding.weight.detach().clone()
    with caplog.at_level(logging.INFO):
        found = load_word_vectors(embedding, path, VOCAB, freeze=False)
    assert found == 3  # the, dog, red; not the specials' text ("<unk>"), not words outside the vocabulary
    for word in ("the", "dog", "red"):
        torch.testing.assert_close(embedding.weight[VOCAB.stoi[word]], vectors[word])  # the first "dog" line
    untouched = [i for i in range(V) if VOCAB.itos[i] not in ("the", "dog", "red")]
    assert torch.equal(embedding.weight[untouched], before[untouched])  # initialised as without vectors
    assert (embedding.weight[0] == 0).all() and embedding.weight.requires_grad
    assert any("word vectors: 3 of 8 vocabulary words found" in r.getMessage() and "fine-tuned" in r.getMessage()
               for r in caplog.records)


def test_frozen_word_vectors_leave_the_embedding_out_of_the_optimizer(tmp_path):
    path, _ = _glove(tmp_path)
    module = CaptioningModule(_net(LSTMDecoder), VOCAB, word_vectors=str(path), freeze_word_vectors=True,
                              scheduler={"name": "none"})
    module.setup("fit")
    assert not module.net.decoder.embed.weight.requires_grad
    params = [p for g in module.configure_optimizers().param_groups for p in g["params"]]
    assert all(p is not module.net.decoder.embed.weight for p in params) and params


def test_word_vectors_of_the_wrong_width_or_a_missing_file_name_the_setting(tmp_path):
    path, _ = _glove(tmp_path, dim=3)
    with pytest.raises(ValueError, match=r"model\.module\.word_vectors=.*glove\.txt: its vectors have 3 dimensions, but "
                                         r"the decoder's word embedding has 5 .*model\.decoder\.embed_dim=3"):
        read_word_vectors(path, VOCAB, 5)
    with pytest.raises(FileNotFoundError, match=r"model\.module\.word_vectors=.*nothing\.txt: no such file"):
        read_word_vectors(tmp_path / "nothing.txt", VOCAB, 5)
    broken = tmp_path / "broken.txt"
    broken.write_text("the 1 2 3 4 5\ndog 1 2 x 4 5\n")
    with pytest.raises(ValueError, match=r"line 2 \('dog'\) is not 5 numbers"):
        read_word_vectors(broken, VOCAB, 5)


# ----- range errors -------------------------------------------------------------------------
@pytest.mark.parametrize("key, value, fix", [
    ("scheduler.name", "linear", "one of none, cosine, step, plateau"),
    ("scheduler.decay", 1.5, "a factor between 0 and 1"),
    ("scheduler.step_epochs", 0, "at least 1"),
    ("scheduler.patience", -1, "at least 0"),
    ("objective.label_smoothing", 1.0, r"in \[0, 1\)"),
    ("objective.scheduled_sampling.probability", 1.2, r"a probability in \[0, 1\]"),
    ("objective.scheduled_sampling.start", -2, "at least 0"),
    ("objective.scheduled_sampling.ramp", 0, "at least 1"),
    ("scheduler.mode", "up", "max or min"),
])
def test_recipe_settings_out_of_range_name_the_setting_and_the_fix(key, value, fix):
    group, *inner, name = key.split(".")
    setting = {name: value}
    for part in reversed(inner):
        setting = {part: setting}
    with pytest.raises(ValueError, match=rf"^model\.module\.{key}={value}: must be {fix}") as err:
        CaptioningModule(_net(LSTMDecoder), VOCAB, **{group: setting})
    assert "\n" not in str(err.value)


def test_the_switch_to_self_critical_training_is_one_log_line(caplog):
    from capgen.lightning.module import CaptioningModule
    from capgen.models import Captioner, LSTMDecoder, SmallCNN

    vocab = tiny_vocab()
    net = Captioner(SmallCNN(widths=(4,), grid=2), lambda **kw: LSTMDecoder(**kw, embed_dim=5, hidden_dim=7),
                    vocab_size=len(vocab))
    module = CaptioningModule(net, vocab, objective={"name": "scst", "scst": {"from_epoch": 2}})
    module.set_train_references({1: ["a red circle"], 2: ["a blue square"]})
    with caplog.at_level(logging.INFO, logger="capgen.lightning.module"):
        module.on_train_start()
        for epoch in range(4):
            module._trainer = SimpleNamespace(current_epoch=epoch)  # what Lightning's current_epoch reads
            module.on_train_epoch_start()
        module.on_train_start()  # resumed at epoch 3, past the switch: said once more, at the start
        module.on_train_epoch_start()
    said = [r.getMessage() for r in caplog.records if "self-critical" in r.getMessage()]
    assert [s.split(":")[0] for s in said] == ["epoch 2", "epoch 3"], said
    assert "SCST) from epoch 2 on, after 2 cross-entropy epoch(s)" in said[0] and "lr 5e-05" in said[0]
