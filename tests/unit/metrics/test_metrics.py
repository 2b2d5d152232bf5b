import logging

import pytest
import torch
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider

from capgen.metrics.captions import CaptionScores, score_captions
from capgen.vocab import Vocabulary

from helpers.fakes import tiny_vocab

REFS = {
    10: ["a small red circle left of a big blue square", "there is a red circle to the left of a blue square"],
    11: ["a large green triangle above a small yellow diamond", "a green triangle is over a yellow diamond"],
    12: ["a big purple square in the middle", "there is a large purple square in the centre"],
}
PREDS = {10: "a small red circle left of a blue square", 11: "a green triangle above a diamond", 12: "a purple square"}


def test_scores_equal_pycocoevalcap_called_directly():
    scores = score_captions(PREDS, REFS)
    gts = {i: r for i, r in REFS.items()}
    res = {i: [p] for i, p in PREDS.items()}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    assert [scores[f"BLEU-{n}"] for n in range(1, 5)] == bleu
    assert scores["CIDEr"] == cider
    assert 0 < scores["BLEU-4"] < scores["BLEU-1"] < 1


def test_metric_accumulates_batches_and_deduplicates_repeated_images():
    vocab = Vocabulary.build([c for refs in REFS.values() for c in refs] + list(PREDS.values()))
    metric = CaptionScores(vocab, REFS)
    ids = {i: torch.tensor(vocab.encode(p)[1:]) for i, p in PREDS.items()}  # without <start>
    metric.update(torch.tensor([10, 11]), torch.nn.utils.rnn.pad_sequence([ids[10], ids[11]], batch_first=True))
    # a distributed sampler pads the last batch with an image already seen: counted once
    metric.update(torch.tensor([12, 10]), torch.nn.utils.rnn.pad_sequence([ids[12], ids[10]], batch_first=True))
    assert metric.predictions() == PREDS
    assert metric.compute() == score_captions(PREDS, REFS)
    metric.reset()
    metric.update(torch.tensor([12]), ids[12][None])
    assert metric.predictions() == {12: PREDS[12]}


def test_metric_passes_its_metrics_and_tokenizer_to_score_captions():
    vocab = Vocabulary.build([c for refs in REFS.values() for c in refs] + list(PREDS.values()))
    metric = CaptionScores(vocab, REFS, metrics=("BLEU", "ROUGE-L"), tokenizer="python")
    for i, p in PREDS.items():
        metric.update(torch.tensor([i]), torch.tensor(vocab.encode(p)[1:])[None])
    scores = metric.compute()
    assert set(scores) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L"}
    assert scores == score_captions(PREDS, REFS, metrics=("BLEU", "ROUGE-L"))
    assert CaptionScores(vocab, REFS).metric_names == ("BLEU", "CIDEr")  # the default


def test_metric_rejects_unknown_metrics_and_tokenizers_when_built():
    vocab = Vocabulary.build(["a cat"])
    with pytest.raises(ValueError, match="unknown caption metrics"):
        CaptionScores(vocab, metrics=("BLEU", "Meteor"))
    with pytest.raises(ValueError, match="tokenizer must be one of"):
        CaptionScores(vocab, tokenizer="nltk")


def test_per_image_rows_count_each_image_once_whatever_the_batches():
    from capgen.metrics.grounding import GroundingScores
    from capgen.metrics.loss import ImageMeanLoss

    ids = torch.tensor([7, 3, 9, 3, 1])  # image 3 repeated, as DDP's sampler repeats images
    sums = torch.tensor([2.0, 1.0, 4.0, 1.0, 0.5], dtype=torch.float64)
    counts = torch.tensor([4, 2, 8, 2, 1])
    one, two = ImageMeanLoss(), ImageMeanLoss()
    one.update(ids, sums, counts)
    for part in ([4, 0], [2, 3, 1]):  # other batches, other order
        two.update(ids[part], sums[part], counts[part])
    expected = (2.0 + 1.0 + 4.0 + 0.5) / (4 + 2 + 8 + 1)  # float64 by hand, image 3 once
    assert float(one.compute()) == float(two.compute()) == pytest.approx(expected, rel=1e-7)
    assert one.per_image()[0] == [1, 3, 7, 9]

    grounding = GroundingScores()
    rows = torch.tensor([[1.0, 0.5, 1, 0, 0], [0.0, 0.5, 1, 0, 0], [1.0, 0.5, 1, 0, 0]], dtype=torch.float64)
    grounding.update(torch.tensor([5, 6, 5]), rows)  # image 5 twice: counted once
    score = grounding.compute()
    assert (score.score, score.chance, score.n_words) == (0.5, 0.5, 2)


def test_scores_without_references_say_how_to_give_them():
    vocab = Vocabulary.build(["a red circle"])
    scores = CaptionScores(vocab)
    scores.update(torch.tensor([1]), torch.tensor([[vocab.stoi["a"], vocab.end_id]]))
    with pytest.raises(ValueError, match=r"set_references\(stage, datamodule.references\(split\)\)"):
        scores.compute()


def test_spice_without_its_models_is_left_out_of_the_default_metrics_with_one_line_and_no_download_advice(
        monkeypatch, tmp_path, caplog):
    from capgen.metrics import captions

    monkeypatch.setattr(captions.shutil, "which", lambda name: "/usr/bin/java")
    monkeypatch.setattr(captions, "_SPICE_MODELS", [tmp_path / "stanford-corenlp-3.6.0.jar"])
    monkeypatch.setattr(captions, "_spice_noted", False)
    with caplog.at_level(logging.INFO, logger="capgen.metrics"):
        first, again = captions.default_metrics(), captions.default_metrics()
    assert first == again == ("BLEU", "METEOR", "ROUGE-L", "CIDEr")
    said = [r.getMessage() for r in caplog.records if "SPICE" in r.getMessage()]
    assert len(said) == 1 and "get_stanford_models" not in said[0] and "download" not in said[0]


def test_loading_a_checkpoint_says_nothing_of_spice_the_metrics_of_a_test_are_chosen_later(monkeypatch, tmp_path, caplog):
    """capgen-eval metrics=[BLEU,CIDEr] loads the run's module (its val and test metrics unset:
    the defaults), then scores what it was asked: no line about SPICE, which it never scores."""
    from capgen.lightning.module import CaptioningModule
    from capgen.metrics import captions

    from helpers.fakes import write_checkpoint

    monkeypatch.setattr(captions.shutil, "which", lambda name: "/usr/bin/java")
    monkeypatch.setattr(captions, "_SPICE_MODELS", [tmp_path / "stanford-corenlp-3.6.0.jar"])
    monkeypatch.setattr(captions, "_spice_noted", False)
    with caplog.at_level(logging.INFO, logger="capgen.metrics"):
        module = CaptioningModule.from_checkpoint(str(write_checkpoint(tmp_path / "a.ckpt", "lstm")))
        module.configure_test(metrics=("BLEU", "CIDEr"))
    assert tuple(module.test_scores.metric_names) == ("BLEU", "CIDEr") and "SPICE" not in caplog.text


def test_scored_captions_say_which_were_cut():
    from capgen.metrics.captions import CaptionScores

    vocab = tiny_vocab()
    red, circle = vocab.stoi["red"], vocab.stoi["circle"]
    scores = CaptionScores(vocab, metrics=("BLEU",))
    scores.update(torch.tensor([7, 8]), torch.tensor([[red, circle, red, 0], [red, circle, vocab.end_id, 0]]))
    rows = {r["image_id"]: r for r in scores.captions()}
    assert rows[7].get("cut") is True and "cut" not in rows[8]
