import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from capgen.vocab import SPECIALS, Vocabulary, tokenize

FAKECAP = Path(__file__).resolve().parents[2] / "shared" / "data" / "captions_val2014_fakecap_results.json"


def test_tokenize_lowercases_splits_and_drops_punctuation():
    assert tokenize("A Dog's toy, on the TABLE.") == ["a", "dog", "'s", "toy", "on", "the", "table"]
    assert tokenize("They don't; it's 10:30 -- ok?!") == ["they", "do", "n't", "it", "'s", "10:30", "ok"]
    assert tokenize("a t-shirt and a man/woman ...") == ["a", "t-shirt", "and", "a", "man/woman"]
    assert tokenize("   ") == []


def test_special_token_ids():
    v = Vocabulary.build(["a cat", "a dog"])
    assert v.itos[:4] == list(SPECIALS)
    assert (v.pad_id, v.start_id, v.end_id, v.unk_id) == (0, 1, 2, 3)
    assert [v.stoi[s] for s in SPECIALS] == [0, 1, 2, 3]


def test_build_min_freq_orders_by_frequency_and_counts_only_max_len_words():
    caps = ["a red circle", "a blue circle", "a red square", "zebra zebra zebra zebra zebra"]
    v = Vocabulary.build(caps, min_freq=2, max_len=3)
    # "zebra" appears 5 times but only 3 fit in max_len; still kept (3 >= 2)
    counts = Counter(w for c in caps for w in tokenize(c)[:3])
    kept = [w for w in v.itos[4:]]
    assert set(kept) == {w for w, n in counts.items() if n >= 2}
    assert [counts[w] for w in kept] == sorted((counts[w] for w in kept), reverse=True)
    assert "blue" not in v.stoi and "square" not in v.stoi


def test_encode_decode_round_trip_truncation_and_unknown():
    v = Vocabulary.build(["a small red circle above a big blue square"], max_len=5)
    ids = v.encode("A small red circle above a big blue square.")
    assert ids[0] == v.start_id and ids[-1] == v.end_id and len(ids) == 5 + 2
    assert v.decode(ids) == "a small red circle above"
    assert v.decode(v.encode("a purple circle")) == "a <unk> circle"
    # decode stops at <end> and skips padding
    assert v.decode(ids + [0, 0, 5]) == "a small red circle above"


def test_save_load_round_trip(tmp_path):
    v = Vocabulary.build(["one two three", "two three", "three"], min_freq=1, max_len=7)
    v.save(tmp_path / "vocab.json")
    w = Vocabulary.load(tmp_path / "vocab.json")
    assert w == v and w.max_len == 7 and w.encode("three two one") == v.encode("three two one")
    assert Vocabulary.from_dict(v.to_dict()) == v


def test_load_bad_file_names_the_file(tmp_path):
    bad = tmp_path / "vocab.json"
    bad.write_text('{"nope": 1}')
    with pytest.raises(ValueError, match="vocab.json.*words"):
        Vocabulary.load(bad)
    with pytest.raises(ValueError, match="must start with"):
        Vocabulary(["a", "b"])


def _ngram_counts(token_lists, n_max=4):
    return [sum(max(len(t) - n + 1, 0) for t in token_lists) for n in range(1, n_max + 1)]


def test_fakecap_token_and_ngram_counts_match_official_figures():
    caps = [r["caption"] for r in json.loads(FAKECAP.read_text())]
    tokens = [tokenize(c) for c in caps]
    assert sum(map(len, tokens)) == 9893
    assert _ngram_counts(tokens) == [9893, 8893, 7893, 6893]


@pytest.mark.skipif(shutil.which("java") is None, reason="the official PTB tokenizer needs java")
def test_matches_official_java_tokenizer_token_for_token():
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    caps = [r["caption"] for r in json.loads(FAKECAP.read_text())]
    caps += [
        "A dog's toy, on the table.",
        "Two men don't like (red) cars!",
        "It's 10:30 -- I can't go",
        "The \"best\" cat; ever...",
        "a man/woman with an umbrella & hat",
        "people are 'happy'",
        "cannot gonna wanna",
    ]
    official = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(caps)})
    for i, c in enumerate(caps):
        assert tokenize(c) == official[i][0].split(), c


def test_special_tokens_survive_tokenization_and_encode_to_their_ids():
    v = Vocabulary.build(["a dog on the road"])
    assert tokenize("a <unk> on the road") == ["a", "<unk>", "on", "the", "road"]
    assert v.encode("a <unk> on the road")[2] == v.unk_id
    assert tokenize("a <b> c") == ["a", "<", "b", ">", "c"]  # only our own specials are kept whole
