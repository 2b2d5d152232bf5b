"""Diversity of several captions per image (n-best lists, samples): how different an image's
captions are from each other, whatever their quality.

Captions are tokenized as the scorers see them (capgen.metrics.captions.tokenize_captions).
Each statistic is computed per image over that image's m >= 2 captions, then averaged over
images (every image counts once, whatever its m).

Div-n (n = 1, 2): distinct n-grams among the image's captions / total words in them. This is
    the convention of the papers that report it (Shetty et al. 2017, "Speaking the same
    language"; Aneja et al. 2019, "Sequential latent spaces for modeling the intention during
    diverse image captioning"; Deshpande et al. 2019), whose evaluation code divides by the
    number of words, not of n-grams: Div-2 of m copies of one L-word caption is
    (L-1) / (m L). Higher = more diverse.
mBLEU-4: each caption's BLEU-4 against the image's other captions as references, averaged over
    its captions. BLEU-4 is pycocoevalcap's sentence-level score (closest reference length,
    its smoothing of empty n-gram counts), the one it reports per image. Lower = more
    diverse. (Published tables often use the corpus-level variant: for each caption index k,
    corpus BLEU-4 of all images' k-th captions against their others, averaged over k; it
    weighs long captions more and needs the same m for every image.)
self-CIDEr (Wang & Chan 2019, "Describing like humans: on diversity in image captioning"):
    the kernel K (m x m), K_ij = (1/4) sum_{n=1..4} cos(g_n(c_i), g_n(c_j)), where g_n(c) is
    caption c's CIDEr tf-idf vector of n-grams (term count x (log N - log max(1, df)), df
    = number of images among the N of `references` whose references hold the n-gram) and a
    cosine with a zero vector is 0. That is CIDEr (x 10) of c_i against c_j alone, without
    CIDEr-D's clipping and length penalty, as Wang & Chan's and self-critical.pytorch's
    evaluation code compute it, so K is a Gram matrix: symmetric, positive semi-definite.
    With its eigenvalues l_1 >= ... >= l_m (negatives from rounding set to 0):
        self-CIDEr = -log_m( sqrt(l_1) / sum_i sqrt(l_i) )
    0 when all captions are the same (K has rank 1), 1 when they share no n-gram (K = I).
    An image whose captions all have zero vectors scores 0 (nothing tells them apart).
    The document frequencies come from `references` (the evaluated split's, as capgen's
    CIDEr-D scores use).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
from pycocoevalcap.bleu.bleu import Bleu

from .captions import tokenize_captions

NAMES = ("Div-1", "Div-2", "mBLEU-4", "self-CIDEr")


def diversity_statistics(
    captions: Mapping[int, Sequence[str]], references: Mapping[int, Sequence[str]], tokenizer: str = "python"
) -> tuple[dict[str, float], dict[int, dict[str, float]]]:
    """({"Div-1", "Div-2", "mBLEU-4", "self-CIDEr"} averaged over images, the same per image) of
    `captions` (image id -> its m >= 2 captions); `references` (image id -> reference captions)
    give self-CIDEr's document frequencies."""
    check_captions(captions)
    if not references:
        raise ValueError("self-CIDEr needs the evaluated split's references for its document frequencies; none given")
    ids = list(captions)
    flat = tokenize_captions([c for i in ids for c in captions[i]], tokenizer)
    tokens, start = {}, 0
    for i in ids:
        tokens[i] = flat[start : start + len(captions[i])]
        start += len(captions[i])
    ref_ids = list(references)
    ref_flat = tokenize_captions([r for i in ref_ids for r in references[i]], tokenizer)
    frequencies, start = Counter(), 0
    for i in ref_ids:
        # df: the number of images whose references hold the n-gram (once per image)
        frequencies.update({g for t in ref_flat[start : start + len(references[i])] for g in ngrams(t, range(1, 5))})
        start += len(references[i])
    idf = TfIdf(frequencies, len(ref_ids))

    mbleu = mutual_bleu4(tokens)
    per_image = {
        i: {"Div-1": div_n(tokens[i], 1), "Div-2": div_n(tokens[i], 2), "mBLEU-4": mbleu[i],
            "self-CIDEr": self_cider(tokens[i], idf)}
        for i in ids
    }
    means = {name: math.fsum(v[name] for v in per_image.values()) / len(ids) for name in NAMES}
    return means, per_image


def check_captions(captions: Mapping[int, Sequence[str]]) -> None:
    if not captions:
        raise ValueError("no captions to measure the diversity of")
    few = [i for i, c in captions.items() if isinstance(c, str) or len(c) < 2]
    if few:
        raise ValueError(
            f"diversity statistics compare an image's captions with each other, so each image needs a list of at "
            f"least 2; images {few[:5]} (of {len(few)}) have fewer. Decode several captions per image (an n-best "
            f"list or samples) to measure diversity."
        )


def ngrams(tokens: Sequence[str], orders: range) -> list[tuple[str, ...]]:
    """Every n-gram of `tokens` for each n in `orders`, with repeats."""
    return [tuple(tokens[k : k + n]) for n in orders for k in range(len(tokens) - n + 1)]


def div_n(captions: Sequence[Sequence[str]], n: int) -> float:
    """Distinct n-grams among the captions (token lists) / total words in them; 0 for no words."""
    words = sum(map(len, captions))
    distinct = {g for c in captions for g in ngrams(c, range(n, n + 1))}
    return len(distinct) / words if words else 0.0


def mutual_bleu4(tokens: Mapping[int, Sequence[Sequence[str]]]) -> dict[int, float]:
    """Image id -> mean over its captions of the caption's BLEU-4 against the image's others,
    from one run of pycocoevalcap's Bleu over every (image, caption) pair."""
    gts, res = {}, {}
    for i, captions in tokens.items():
        texts = [" ".join(c) for c in captions]
        for k, text in enumerate(texts):
            gts[(i, k)] = texts[:k] + texts[k + 1 :]
            res[(i, k)] = [text]
    _, sentence = Bleu(4).compute_score(gts, res, verbose=0)
    scores: dict[int, list[float]] = {i: [] for i in tokens}
    for (i, _), b in zip(gts, sentence[3]):  # in the order of gts
        scores[i].append(float(b))
    return {i: math.fsum(s) / len(s) for i, s in scores.items()}


class TfIdf:
    """CIDEr's n-gram weights: log N - log max(1, df), df from the references of N images."""

    def __init__(self, frequencies: Mapping[tuple[str, ...], int], n_images: int):
        self.frequencies, self.log_n = frequencies, math.log(n_images)

    def vectors(self, captions: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        """(m, G) float64: each caption's tf-idf weights over the G distinct n-grams (n = 1..4) of
        all m captions; and (G,) the n of each column."""
        counts = [Counter(ngrams(c, range(1, 5))) for c in captions]
        column = {g: k for k, g in enumerate({g for c in counts for g in c})}
        tf = np.zeros((len(captions), len(column)))
        for row, c in enumerate(counts):
            for g, count in c.items():
                tf[row, column[g]] = count
        weight = np.array([self.log_n - math.log(max(1, self.frequencies.get(g, 0))) for g in column])
        return tf * weight, np.array([len(g) for g in column], dtype=np.int64)


def self_cider(captions: Sequence[Sequence[str]], idf: TfIdf) -> float:
    """Wang & Chan's self-CIDEr of one image's m >= 2 captions (token lists); see the module docstring."""
    m = len(captions)
    x, order = idf.vectors(captions)  # (m, G), (G,)
    # Each caption's norm within each n-gram order, spread to that order's columns: (m, G).
    blocks = (order[:, None] == np.arange(1, 5)).astype(np.float64)  # (G, 4) one-hot of n
    norms = np.sqrt((x * x) @ blocks)[:, order - 1]
    unit = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)  # a zero vector stays 0
    # Columns of different orders never meet in a dot product, so one product sums the 4 cosines.
    kernel = unit @ unit.T / 4  # (m, m)
    roots = np.sqrt(np.clip(np.linalg.eigvalsh(kernel), 0.0, None))
    if roots.sum() == 0:
        return 0.0
    return math.log(roots.sum() / roots.max()) / math.log(m)
