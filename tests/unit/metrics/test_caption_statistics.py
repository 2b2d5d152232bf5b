"""Statistics of captions: per-image BLEU-4 and CIDEr-D against pycocoevalcap called directly,
and the corpus and diversity statistics on a 5-caption fixture whose values are worked out
by hand below (float64 arithmetic written out, independent of capgen's code)."""

import math
from collections import Counter

import numpy as np
import pytest
import torch
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider

from capgen.commands.eval.statistics import corpus_statistics, diversity
from capgen.metrics.caption_stats import caption_statistics
from capgen.metrics.captions import CaptionScores, score_captions, score_captions_per_image
from capgen.metrics.diversity import diversity_statistics
from capgen.vocab import Vocabulary

# The fixture. Tokens after the official tokenization (lower case, punctuation dropped):
#   C1 a red circle left of a blue square   (8 words)
#   C2 a red circle left of a blue square   (8, the same caption as C1)
#   C3 there is a green triangle            (5)
#   C4 a blue square                        (3)
#   C5 a red circle above a green triangle  (7)
FIVE = ["A red circle left of a blue square.", "a red circle left of a blue square", "There is a green triangle.",
        "a blue square", "a red circle above a green triangle"]
TRAINING = ["A blue square.", "a yellow diamond", "there is a green triangle"]


def test_corpus_statistics_of_five_captions_one_per_image():
    stats = caption_statistics(FIVE, TRAINING)
    # words: a red circle left of blue square there is green triangle above
    assert stats["vocabulary"] == 12
    assert stats["mean_length"] == pytest.approx((8 + 8 + 5 + 3 + 7) / 5)  # 6.2
    assert stats["unique_percent"] == pytest.approx(100 * 4 / 5)  # C1 = C2
    # C3 and C4 are training references once tokenized ("A blue square." = "a blue square"): 3 of 5 novel
    assert stats["novel_percent"] == pytest.approx(100 * 3 / 5)
    assert caption_statistics(FIVE)["novel_percent"] is None  # no training references given


def _bleu4(correct: list[int], guess: list[int], brevity: float = 1.0) -> float:
    """pycocoevalcap's sentence BLEU-4: the geometric mean of (correct + 1e-15) / (guess + 1e-9) over
    n = 1..4, times the brevity penalty exp(1 - r/c) when the caption (c words) is shorter than the
    closest reference (r words, the shorter one on a tie)."""
    return math.prod((c + 1e-15) / (g + 1e-9) for c, g in zip(correct, guess)) ** 0.25 * brevity


def test_diversity_of_five_captions_of_one_image():
    references = {1: TRAINING, 2: ["a red circle", "a yellow diamond"]}
    means, per_image = diversity_statistics({7: FIVE}, references)
    assert means == per_image[7]
    # 31 words, 12 distinct (see the corpus test)
    assert means["Div-1"] == pytest.approx(12 / 31)
    # distinct bigrams: C1 gives 7 (a red, red circle, circle left, left of, of a, a blue, blue
    # square), C2 none new, C3 4 (there is, is a, a green, green triangle), C4 none new, C5 2
    # (circle above, above a): 13, over the 31 words (not over the 26 bigrams)
    assert means["Div-2"] == pytest.approx(13 / 31)

    # Each caption against the other four, (correct, guess) n-gram counts for n = 1..4:
    b1 = b2 = _bleu4([8, 7, 6, 5], [8, 7, 6, 5])  # C1 and C2 match each other: ~1
    # C3: there/is unmatched, a green triangle from C5: 3/5, 2/4, 1/3, 0/2; closest
    # reference length 3 (|5-3| = |5-7|, the shorter wins) is shorter than 5: no penalty
    b3 = _bleu4([3, 2, 1, 0], [5, 4, 3, 2])
    # C4: all of "a blue square" is in C1: 3/3, 2/2, 1/1, 0/0; closest reference has 5 words
    b4 = _bleu4([3, 2, 1, 0], [3, 2, 1, 0], brevity=math.exp(1 - 5 / 3))
    # C5: a a red circle green triangle / a red, red circle, a green, green triangle / a red
    # circle, a green triangle / none: 6/7, 4/6, 2/5, 0/4; closest reference 8 words
    b5 = _bleu4([6, 4, 2, 0], [7, 6, 5, 4], brevity=math.exp(1 - 8 / 7))
    assert means["mBLEU-4"] == pytest.approx((b1 + b2 + b3 + b4 + b5) / 5, rel=1e-9)
    assert 0.40 < means["mBLEU-4"] < 0.41  # two near-copies dominate it

    # C1 = C2 leaves the kernel an eigenvalue of 0 that rounding makes +-1e-17; its square root
    # (3e-9) is the precision the two computations can agree to.
    assert means["self-CIDEr"] == pytest.approx(_self_cider_reference(FIVE, references), abs=1e-7)
    assert 0 < means["self-CIDEr"] < 1


def _self_cider_reference(captions: list[str], references: dict[int, list[str]]) -> float:
    """Wang & Chan's self-CIDEr written out: CIDEr tf-idf vectors (df over the images of
    `references`), the kernel of cosines averaged over n = 1..4, the square roots of its
    singular values s (its eigenvalues: the kernel is symmetric positive semi-definite, which
    is why Wang & Chan take an SVD), -log(max sqrt s / sum sqrt s) / log m."""
    def grams(text: str, n: int) -> Counter:
        words = text.lower().replace(".", "").split()
        return Counter(tuple(words[k : k + n]) for k in range(len(words) - n + 1))

    m = len(captions)
    kernel = np.zeros((m, m))
    for n in range(1, 5):
        df = Counter(g for refs in references.values() for g in set().union(*(grams(r, n) for r in refs)))
        vectors = [{g: tf * (math.log(len(references)) - math.log(max(1, df[g]))) for g, tf in grams(c, n).items()}
                   for c in captions]
        for i in range(m):
            for j in range(m):
                dot = sum(w * vectors[j].get(g, 0.0) for g, w in vectors[i].items())
                norms = math.sqrt(sum(w * w for w in vectors[i].values())) * math.sqrt(sum(w * w for w in vectors[j].values()))
                kernel[i, j] += (dot / norms if norms else 0.0) / 4
    roots = np.sqrt(np.linalg.svd(kernel, compute_uv=False))
    return -math.log(roots.max() / roots.sum()) / math.log(m)


def test_self_cider_is_0_for_copies_and_1_for_captions_sharing_no_ngram():
    references = {1: ["a red circle"], 2: ["a blue square"]}
    means, per_image = diversity_statistics(
        {1: ["A red circle.", "a red circle", "a red circle"], 2: ["red circle", "blue square"]}, references)
    # copies: the kernel is all one value, rank 1: sqrt(l_1) / sum sqrt(l_i) = 1, -log 1 = 0
    assert per_image[1]["self-CIDEr"] == pytest.approx(0.0, abs=1e-6)
    # nothing shared: K = diag(k, k) (each caption's own cosines), equal eigenvalues: -log_2(1/2) = 1
    assert per_image[2]["self-CIDEr"] == pytest.approx(1.0)
    assert per_image[1]["Div-1"] == pytest.approx(3 / 9) and per_image[2]["Div-2"] == pytest.approx(2 / 4)
    # copies match all of each other, but 3 words have no 4-gram: 0/0 counts as 1e-15 / 1e-9
    assert per_image[1]["mBLEU-4"] == pytest.approx(_bleu4([3, 2, 1, 0], [3, 2, 1, 0])) == pytest.approx(1e-6 ** 0.25)
    assert means["self-CIDEr"] == pytest.approx((per_image[1]["self-CIDEr"] + 1.0) / 2)


def test_diversity_needs_several_captions_per_image():
    with pytest.raises(ValueError, match=r"images \[2\] \(of 1\) have fewer.*n-best list or samples"):
        diversity_statistics({1: ["a b", "a c"], 2: ["a b"]}, {1: ["a b"]})


# ----- per-image scores -------------------------------------------------------------------
REFS = {
    10: ["a small red circle left of a big blue square", "there is a red circle to the left of a blue square"],
    11: ["a large green triangle above a small yellow diamond", "a green triangle is over a yellow diamond"],
    12: ["a big purple square in the middle", "there is a large purple square in the centre"],
}
PREDS = {10: "a small red circle left of a blue square", 11: "a green triangle above a diamond", 12: "a purple square"}


def test_per_image_bleu4_and_cider_are_pycocoevalcaps_own_from_one_run():
    corpus, per_image = score_captions_per_image(PREDS, REFS)
    gts, res = dict(REFS), {i: [p] for i, p in PREDS.items()}
    _, bleu = Bleu(4).compute_score(gts, res, verbose=0)
    _, cider = Cider().compute_score(gts, res)
    assert [per_image[i]["BLEU-4"] for i in PREDS] == bleu[3]
    assert [per_image[i]["CIDEr"] for i in PREDS] == cider.tolist()
    assert corpus == score_captions(PREDS, REFS)
    assert score_captions_per_image(PREDS, REFS, metrics=("CIDEr",))[1][10].keys() == {"CIDEr"}


def test_the_metric_keeps_each_images_caption_with_its_scores():
    vocab = Vocabulary.build([c for refs in REFS.values() for c in refs] + list(PREDS.values()))
    metric = CaptionScores(vocab, REFS)
    for i, p in PREDS.items():
        metric.update(torch.tensor([i]), torch.tensor(vocab.encode(p)[1:])[None])
    metric.compute()
    _, per_image = score_captions_per_image(PREDS, REFS)
    assert [(r["image_id"], r["caption"], r["BLEU-4"], r["CIDEr"]) for r in metric.scored_captions] == [
        (i, p, per_image[i]["BLEU-4"], per_image[i]["CIDEr"]) for i, p in PREDS.items()]


# ----- capgen-eval's use of them ------------------------------------------------------------
def test_eval_rows_with_several_captions_get_diversity_and_the_first_caption_counts_for_the_corpus():
    class Data:  # a datamodule's references(), as capgen-eval reads the training split
        def references(self, split):
            assert split == "train"
            return {1: TRAINING}

    # capgen-eval's rows with n_best > 1: the scored first caption, and every caption of the image
    rows = [{"image_id": 7, "caption": FIVE[0], "captions": FIVE},
            {"image_id": 8, "caption": "a red circle", "captions": ["a red circle", "a blue square"]}]
    stats = corpus_statistics(rows, Data(), "python")
    assert stats == caption_statistics([FIVE[0], "a red circle"], TRAINING)  # each image's first (best) caption
    references = {7: TRAINING, 8: ["a red circle"]}
    means = diversity({7: FIVE, 8: rows[1]["captions"]}, references, "python", rows)
    expected_means, expected = diversity_statistics({7: FIVE, 8: rows[1]["captions"]}, references)
    assert means == expected_means
    assert {k: rows[0][k] for k in expected[7]} == expected[7] and {k: rows[1][k] for k in expected[8]} == expected[8]
