"""The SCST reward (capgen.metrics.cider_reward) against pycocoevalcap's CIDEr-D, per image.

pycocoevalcap takes its document frequencies from the references it scores, the reward from
the references it was built from: so the two are compared with pycocoevalcap scoring every
image the reward knows. Words are strings "w<id>" for pycocoevalcap and ids for the reward,
<end> (id 2) a word on both sides ("w2").
"""

import random

import numpy as np
import pytest
import torch
from pycocoevalcap.cider.cider import Cider

from capgen.metrics.cider_reward import CiderDReward
from capgen.tokenizer import tokenize
from capgen.vocab import Vocabulary

END = 2
V = 40


def _words(ids) -> str:
    return " ".join(f"w{t}" for t in ids)


def _official(refs: dict, hyps: dict) -> np.ndarray:
    """pycocoevalcap's per-image CIDEr-D, in the order of refs."""
    gts = {i: [_words(r) for r in rs] for i, rs in refs.items()}
    res = {i: [_words(hyps[i])] for i in refs}
    return Cider().compute_score(gts, res)[1]


def _batch(captions: list[list[int]]) -> torch.Tensor:
    """(N, L) word ids then <pad>=0, as the decoders return them."""
    out = torch.zeros(len(captions), max(1, max(len(c) for c in captions)), dtype=torch.long)
    for row, c in enumerate(captions):
        out[row, : len(c)] = torch.tensor(c, dtype=torch.long)
    return out


def _fixture(seed: int, images: int = 30):
    """Random references (1-6 per image, words from a small range so n-grams repeat across
    images) and one caption per image: finished (<end>) or not, words the references never
    use, repeated n-grams (clipping), the empty caption, a caption equal to a reference."""
    rng = random.Random(seed)
    refs = {}
    for k in range(images):
        refs[k * 7 + 3] = [[rng.randint(4, 12) for _ in range(rng.randint(1, 9))] + [END] for _ in range(rng.randint(1, 6))]
    hyps = {i: [rng.randint(4, 16) for _ in range(rng.randint(0, 10))] + ([END] if rng.random() < 0.8 else [])
            for i in refs}
    ids = list(refs)
    hyps[ids[0]] = [5, 5, 5, 5, 5, 5, END]
    hyps[ids[1]] = list(refs[ids[1]][0])
    hyps[ids[2]] = []
    hyps[ids[3]] = [15, 16, 15, 16]
    return refs, hyps


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reward_equals_pycocoevalcap_per_image(seed):
    refs, hyps = _fixture(seed)
    reward = CiderDReward(refs, V)
    ids = list(refs)
    ours = reward(torch.tensor(ids), _batch([hyps[i] for i in ids]))
    assert ours.dtype == torch.float64
    np.testing.assert_allclose(ours.numpy(), _official(refs, hyps), rtol=1e-12, atol=1e-12)
    assert ours.max() > 1  # the fixture reaches the interesting range (a caption equal to a reference)


def test_document_frequencies_come_from_all_references_not_from_the_batch():
    """A batch of a few images, in any order and with an image sampled several times, scores
    as those images do when pycocoevalcap scores all of them."""
    refs, hyps = _fixture(3)
    official = dict(zip(refs, _official(refs, hyps)))
    reward = CiderDReward(refs, V)
    ids = list(refs)
    batch = [ids[5], ids[1], ids[5], ids[9], ids[1], ids[5]]
    ours = reward(torch.tensor(batch), _batch([hyps[i] for i in batch]))
    np.testing.assert_allclose(ours.numpy(), [official[i] for i in batch], rtol=1e-12, atol=1e-12)


def test_from_captions_scores_the_vocabulary_encoding_with_its_end():
    """Reference texts are encoded as training encodes them (PTB tokens, cut to max_len, rare
    words <unk>, then <end>); pycocoevalcap on those same words with an "<end>" word agrees."""
    texts = {1: ["A red circle left of a blue square.", "a red circle and a blue square"],
             2: ["A green triangle, above a red circle!", "green triangle over red circle near a tiny blue dot"],
             3: ["A big blue square.", "blue square", "a square that is blue and big and very big"]}
    vocab = Vocabulary.build([c for cs in texts.values() for c in cs][:-1], max_len=6)  # the last one's words are rare
    reward = CiderDReward.from_captions(texts, vocab)

    def as_words(caption: str) -> str:
        return " ".join([w if w in vocab.stoi else "<unk>" for w in tokenize(caption)[: vocab.max_len]] + ["<end>"])

    captions = {1: "a red circle left of a square", 2: "green triangle above", 3: "big blue square big blue square"}
    gts = {i: [as_words(c) for c in cs] for i, cs in texts.items()}
    official = Cider().compute_score(gts, {i: [as_words(c)] for i, c in captions.items()})[1]
    tokens = _batch([vocab.encode(captions[i])[1:] for i in texts])
    np.testing.assert_allclose(reward(torch.tensor(list(texts)), tokens).numpy(), official, rtol=1e-12, atol=1e-12)


def test_unknown_image_and_bad_references_are_clear_errors():
    reward = CiderDReward({1: [[4, 5, END]]}, V)
    with pytest.raises(ValueError, match=r"no references for image ids \[7\]"):
        reward(torch.tensor([1, 7]), _batch([[4, END], [5, END]]))
    with pytest.raises(ValueError, match="images \\[2\\] have no reference"):
        CiderDReward({1: [[4, END]], 2: []}, V)
    with pytest.raises(ValueError, match="must lie in 1..39"):
        CiderDReward({1: [[4, 40, END]]}, V)


def test_the_scst_reward_scores_captions_and_references_narrower_than_its_4_grams():
    import torch

    from capgen.metrics.cider_reward import CiderDReward

    reward = CiderDReward({1: [[3, 4, 2]], 2: [[5, 2]]}, vocab_size=10)  # no reference holds a 4-gram
    # one word and its <end>: 2 tokens wide, once a tensor-size error
    scores = reward(torch.tensor([1, 2]), torch.tensor([[3, 4], [5, 2]]))
    assert scores[1] > 0 and scores[0] > 0
    assert reward(torch.tensor([1]), torch.tensor([[3, 4, 2]]))[0].item() == pytest.approx(7.5)  # 1-3-grams match: 3/4 x 10
