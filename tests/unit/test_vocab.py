import json
import random
import re
from collections import Counter

import pytest
import torch

from capgen.tokenizer import tokenize
from capgen.vocab import SPECIALS, Vocabulary

from helpers.fakes import tiny_vocab
from helpers.paths import FAKECAP


def test_tokenize_lowercases_splits_and_drops_punctuation():
    assert tokenize("A Dog's toy, on the TABLE.") == ["a", "dog", "'s", "toy", "on", "the", "table"]
    # pycocoevalcap removes "?" and "!" but not a run of them: "?!" stays, as it does there
    assert tokenize("They don't; it's 10:30 -- ok?!") == ["they", "do", "n't", "it", "'s", "10:30", "ok", "?!"]
    assert tokenize("a t-shirt and a man/woman ...") == ["a", "t-shirt", "and", "a", "man/woman"]
    assert tokenize("   ") == []


def test_special_token_ids():
    v = Vocabulary.build(["a cat", "a dog"])
    assert v.itos[:4] == list(SPECIALS)
    assert (v.pad_id, v.start_id, v.end_id, v.unk_id) == (0, 1, 2, 3)
    # the specials are ids, not words: no caption word maps to them
    assert not set(SPECIALS) & v.stoi.keys() and sorted(v.stoi.values()) == list(range(4, len(v)))


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
    bad.write_text('{"words": [')
    with pytest.raises(ValueError, match="vocab.json: not a capgen vocabulary file.*Vocabulary.save"):
        Vocabulary.load(bad)
    with pytest.raises(ValueError, match="must start with"):
        Vocabulary(["a", "b"])


GOOD = {"words": [*SPECIALS, "a", "dog"], "max_len": 16}
# what is wrong -> (the saved dict, a pattern of what the message must say)
INCONSISTENT = {
    "duplicate word": ({**GOOD, "words": [*SPECIALS, "a", "dog", "a"]}, r"'a' twice \(ids 4 and 6\)"),
    "specials missing": ({**GOOD, "words": ["a", "dog"]}, r"must start with \('<pad>', '<start>', '<end>', '<unk>'\)"),
    "specials out of place": ({**GOOD, "words": ["<pad>", "<end>", "<start>", "<unk>", "a"]}, "must start with"),
    "a special twice": ({**GOOD, "words": [*SPECIALS, "<unk>", "a", "<unk>"]}, r"'<unk>' twice \(ids 4 and 6\)"),
    "word not a string": ({**GOOD, "words": [*SPECIALS, "a", 7]}, r"must all be strings, but id 5 is 7 \(int\)"),
    "words not a list": ({**GOOD, "words": "<pad><start><end><unk>"}, "'words' must be a list of strings, got str"),
    "max_len missing": ({"words": GOOD["words"]}, r"needs the keys 'words' and 'max_len', got \['words'\]"),
    "max_len a string": ({**GOOD, "max_len": "16"}, r"'max_len' .*positive whole number, got '16'"),
    "max_len zero": ({**GOOD, "max_len": 0}, "positive whole number, got 0"),
    "max_len a bool": ({**GOOD, "max_len": True}, "positive whole number, got True"),
    "max_len a float": ({**GOOD, "max_len": 16.0}, "positive whole number, got 16.0"),
    "not a dict": ([*SPECIALS], "needs the keys 'words' and 'max_len', got list"),
}


@pytest.mark.parametrize("case", INCONSISTENT)
def test_inconsistent_vocabulary_file_names_itself_the_problem_and_the_fix(tmp_path, case):
    saved, problem = INCONSISTENT[case]
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps(saved))
    with pytest.raises(ValueError) as e:
        Vocabulary.load(path)
    message = str(e.value)
    assert message.startswith(f"{path}: not a consistent capgen vocabulary: ") and "\n" not in message
    assert re.search(problem, message), message
    assert message.endswith("as Vocabulary.save writes it; save the vocabulary again")


def test_inconsistent_vocabulary_in_a_checkpoint_names_the_checkpoint(tmp_path):
    from capgen.runs.checkpoint import read_checkpoint, stamp

    ckpt = {"vocab": INCONSISTENT["duplicate word"][0], "hyper_parameters": {"net_config": {"decoder": "lstm"}},
            "state_dict": {}}
    stamp(ckpt)
    path = tmp_path / "last.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(ValueError) as e:
        read_checkpoint(path, setting="ckpt_path")
    message = str(e.value)
    assert message.startswith(f"ckpt_path={path}: its 'vocab' entry: not a consistent capgen vocabulary: ")
    assert "'a' twice (ids 4 and 6)" in message and message.endswith("use a checkpoint as capgen-train wrote it")
    ckpt["vocab"] = GOOD
    torch.save(ckpt, path)
    assert read_checkpoint(path).vocab == Vocabulary.from_dict(GOOD)


def test_inconsistent_cached_vocabulary_names_the_file(tmp_path):
    from capgen.data.cache import load_vocab, save_vocab

    recipe = {"source": "shapes", "min_freq": 1, "max_len": 16}
    save_vocab(tmp_path, Vocabulary.from_dict(GOOD), recipe)
    assert load_vocab(tmp_path, recipe) == Vocabulary.from_dict(GOOD)
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps({**INCONSISTENT["max_len a string"][0], "built_from": recipe}))
    # An edit by hand no longer matches the checksum capgen-prepare wrote: refused before it is read as a vocabulary.
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: its content does not match the checksum .*"
                                         rf"capgen-prepare data=<this data config> cache_dir={re.escape(str(tmp_path))}"):
        load_vocab(tmp_path, recipe)


def _ngram_counts(token_lists, n_max=4):
    return [sum(max(len(t) - n + 1, 0) for t in token_lists) for n in range(1, n_max + 1)]


def test_fakecap_token_and_ngram_counts_match_official_figures():
    caps = [r["caption"] for r in json.loads(FAKECAP.read_text())]
    tokens = [tokenize(c) for c in caps]
    assert sum(map(len, tokens)) == 9893
    assert _ngram_counts(tokens) == [9893, 8893, 7893, 6893]


def test_special_tokens_stay_whole_and_an_unknown_one_encodes_to_unk():
    v = Vocabulary.build(["a dog on the road"])
    assert tokenize("a <unk> on the road") == ["a", "<unk>", "on", "the", "road"]
    # a caption decoded with <unk> (the course file's captions are) encodes back to <unk>
    assert v.encode(v.decode([1, 4, 3, 2])) == [1, 4, 3, 2] and v.encode("a <unk> on the road")[2] == v.unk_id
    assert tokenize("a <b> c") == ["a", "<", "b", ">", "c"]  # only our own specials are kept whole


def test_caption_text_equal_to_a_special_token_is_an_ordinary_word():
    # frequent: each is a word of its own, with an id after the specials
    caps = ["a <unk> dog", "a <END> cat", "the <pad> and <start>"] * 2
    v = Vocabulary.build(caps, min_freq=2)
    assert v.itos[:4] == list(SPECIALS) and {"<unk>", "<end>", "<pad>", "<start>"} <= set(v.itos[4:])
    ids = v.encode("the <end> <pad> <start> <unk> dog")
    assert ids[0] == v.start_id and ids[-1] == v.end_id
    assert all(i >= 4 for i in ids[1:-1]) and [v.itos[i] for i in ids[1:-1]] == ["the", "<end>", "<pad>", "<start>",
                                                                                  "<unk>", "dog"]
    assert v.decode(ids) == "the <end> <pad> <start> <unk> dog"
    # rare: unknown words, so <unk>, never <pad>/<start>/<end> inside the caption
    v = Vocabulary.build(["a dog", "a dog", "a <end> <pad> <start> <unk> dog"], min_freq=2)
    assert v.itos == [*SPECIALS, "a", "dog"]
    assert v.encode("a <end> <pad> <start> <unk> dog") == [1, 4, 3, 3, 3, 3, 5, 2]
    assert Vocabulary.from_dict(Vocabulary.build(caps).to_dict()) == Vocabulary.build(caps)


def test_encode_never_gives_a_special_id_inside_a_caption():
    rng = random.Random(0)
    pool = ["a", "dog", "cat", "<unk>", "<UNK>", "<end>", "<pad>", "<start>", "<Start>", "<b>", "end", "pad", "."]
    for _ in range(200):
        caps = [" ".join(rng.choices(pool, k=rng.randint(0, 8))) for _ in range(rng.randint(1, 6))]
        v = Vocabulary.build(caps, min_freq=rng.randint(1, 3), max_len=rng.randint(1, 8))
        for c in caps + [" ".join(rng.choices(pool, k=8))]:
            ids = v.encode(c)
            inner = ids[1:-1]
            assert ids[0] == v.start_id and ids[-1] == v.end_id and min(inner, default=3) >= v.unk_id, (c, ids)
            # <unk> exactly where the word is not in the vocabulary
            words = tokenize(c)[: v.max_len]
            assert [i == v.unk_id for i in inner] == [w not in v.itos[4:] for w in words], (c, ids)


def test_tokens_the_official_tokenizer_gives():
    # pinned here so that they hold without java too (the parity test checks them against it)
    assert tokenize("Dr. Smith at St. Mark's, 5 p.m. in the U.S.") == [
        "dr.", "smith", "at", "st.", "mark", "'s", "5", "p.m.", "in", "the", "u.s."]
    assert tokenize("Fruit, etc. and a letter b. on a No. 5 bus, approx. 10") == [
        "fruit", "etc.", "and", "a", "letter", "b.", "on", "a", "no.", "5", "bus", "approx", "10"]
    assert tokenize("A $5 bill (new), 50% off ½ price; 1,000 or 1 1/2 cups") == [
        "a", "$", "5", "bill", "-lrb-", "new", "-rrb-", "50", "%", "off", "1/2", "price", "1,000", "or", "1\xa01/2",
        "cups"]
    assert tokenize("“Café” won’t close – it’s 10:30 😀") == ["café", "wo", "n't", "close", "it", "'s", "10:30"]
    assert tokenize("I cannot, we're gonna see y'all at 3 o'clock... wow!!") == [
        "i", "can", "not", "we", "'re", "gon", "na", "see", "y'", "all", "at", "3", "o'clock", "wow", "!!"]
    assert tokenize("AT&T t-shirt man/woman a.k.a. www.x.com :)") == [
        "at&t", "t-shirt", "man/woman", "a.k.a.", "www.x.com", ":-rrb-"]


def test_line_breaks_read_as_spaces():
    assert tokenize("a dog\non a\r\nbed\u2028by\x0ca\u2029cat") == ["a", "dog", "on", "a", "bed", "by", "a", "cat"]


def test_fast_path_for_plain_captions_agrees_with_the_lexer():
    from capgen.tokenizer import _KEEPS_PERIOD, _plain_words, _ptb_lex
    from capgen.tokenizer import PUNCT as _PUNCT

    rng = random.Random(0)
    words = ["a", "man", "Dog", "ON", "the", "street", "cannot", "Gonna", "etc", "St", "mr", "Mass", "mass", "pty",
             "PTY", "no", "approx", "x", "B", "I", *sorted(_KEEPS_PERIOD)[::7]]
    seps, ends = [" ", "  ", ", ", ","], ["", ".", " .", ". ", ",", ", ."]
    checked = 0
    for _ in range(3000):
        ws = [rng.choice(words) for _ in range(rng.randint(1, 6))]
        caption = ws[0] + "".join(rng.choice(seps) + w for w in ws[1:]) + rng.choice(ends)
        fast = _plain_words(caption)
        if fast is not None:
            checked += 1
            assert fast == [t.lower() for t in _ptb_lex(caption) if t.lower() not in _PUNCT], caption
    assert checked > 1000


def test_a_caption_the_decoder_did_not_end_is_cut_and_shown_marked():
    from capgen.vocab import CUT_MARK, shown

    vocab = tiny_vocab()
    red, circle = vocab.stoi["red"], vocab.stoi["circle"]
    assert vocab.is_cut([red, circle, red])  # max_len words, no <end>
    assert not vocab.is_cut([red, circle, vocab.end_id]) and not vocab.is_cut([vocab.end_id, 0, 0])
    assert shown("red circle red", True) == f"red circle red {CUT_MARK}" and shown("red circle", False) == "red circle"
