import json
import random
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch

from capgen.tokenizer import tokenize
from capgen.vocab import SPECIALS, Vocabulary

FAKECAP = Path(__file__).resolve().parents[1] / "data" / "captions_val2014_fakecap_results.json"


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
    from capgen.training.checkpoint import read_checkpoint, stamp

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


# ---- parity with the official (Java) PTB tokenizer ---------------------------------------

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="the official PTB tokenizer needs java")


def _official(captions, separate=False):
    """Tokens of each caption from pycocoevalcap's PTBTokenizer, the official pipeline.

    It tokenizes all captions as the lines of one file and a few of its rules look at the
    next line; separate=True puts a lower-case line after each caption, the context that
    tokenize() assumes (see its docstring).
    """
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    lines = [line for c in captions for line in ([c, "x"] if separate else [c])]
    out = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(lines)})
    step = 2 if separate else 1
    return [[w for w in out[i * step][0].split(" ") if w] for i in range(len(captions))]


@needs_java
def test_matches_official_tokenizer_on_fakecap_and_tricky_captions():
    caps = [r["caption"] for r in json.loads(FAKECAP.read_text())]
    assert [tokenize(c) for c in caps] == _official(caps)
    official = _official(TRICKY, separate=True)
    wrong = [(c, ours, theirs) for c, ours, theirs in zip(TRICKY, map(tokenize, TRICKY), official) if ours != theirs]
    assert not wrong, "\n".join(f"{c!r}: python {p} java {j}" for c, p, j in wrong[:10])


@needs_java
def test_differences_from_the_official_tokenizer_are_the_documented_ones():
    # tags: Java keeps any tag whole; we keep only capgen's special tokens whole
    assert _official(["a <b> c", "a <unk> c"]) == [["a", "<b>", "c"], ["a", "<unk>", "c"]]
    assert tokenize("a <b> c") == ["a", "<", "b", ">", "c"] and tokenize("a <unk> c") == ["a", "<unk>", "c"]
    # a letter and period at the end of a caption: Java looks at the next caption
    official = _official(["the letter B.", "The sign", "the letter B.", "a sign"])
    assert official[0] == ["the", "letter", "b"]  # the next caption starts with "The"
    assert official[2] == ["the", "letter", "b."]  # ... with "a"
    assert tokenize("the letter B.") == ["the", "letter", "b."]


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


# Realistic captions with the punctuation, numbers, abbreviations, quotes, hyphens, slashes,
# ellipses and Unicode that trip simple tokenizers; all checked against the Java tokenizer.
TRICKY = [
    'Dr. Smith is standing next to Mr. Jones.',
    'Mrs. Brown and Ms. Green walk down St. Charles Ave.',
    "A sign for St. Patrick's Day on Main St.",
    'The clock reads 5 p.m. on a sunny day.',
    'A train leaving at 10 a.m. from the station',
    'A bus stop sign at 3 P.M.',
    'people waiting for the 7 A.M. bus',
    'An airplane flying over the U.S. coast',
    'A flag of the U.S.A. waving',
    'A U.S. Air Force jet on the runway',
    'Two men in the u.s. army uniforms',
    'A view of Washington D.C. from above',
    'A street sign for E. 42nd St. in new york',
    'Street sign at W. 5th Ave. and Broadway',
    'A sign for the Mt. Rainier national park',
    'A boat near Ft. Lauderdale beach',
    'A plate of food, etc.',
    'Fruits like apples, oranges, bananas etc. on a table',
    "A box of donuts from Dunkin' Donuts",
    'A man and his dog vs. a cat',
    'The Washington Monument in D.C.',
    'A large crowd in L.A. watching a game',
    'Jr. high school students on a bus',
    'A sign for Smith & Sons Co. on a brick wall',
    'A truck for ABC Inc. parked outside',
    'A sign for Johnson Corp. headquarters',
    'A small T.V. on top of a dresser',
    'An old tv. sitting on a stand',
    'A man holding a Ph.D. diploma',
    'A toy dog, i.e. a stuffed animal',
    'Animals e.g. dogs and cats in a yard',
    'A sign that says No. 5 on it',
    'A bus with no. 12 on the front',
    'A building on Elm Rd. near a park',
    'The bridge on Hwy. 101',
    'Gen. Lee statue in a park',
    'A Capt. hat on a table',
    'A man named J. R. Smith signing',
    'A letter A. on a sign',
    'The letters A. B. C. on blocks',
    'A sign with the letter b. on it',
    'Plan B. is on the board',
    'A dog next to a.',
    'a man with a hat i.',
    'He is in Sept. at a fair',
    'A calendar showing Jan. 1st',
    'The Mon. morning rush',
    'A man 6 ft. tall',
    'A 5 lbs. bag of flour',
    'A sign reading approx. 5 min. wait',
    'A 12 oz. can of soda',
    "Mr.Smith's dog on a couch",
    'A sign at St.Louis airport',
    'the united states of america u.s',
    'the letters U.S on a plane',
    'A sign says U.K. on it',
    'A crowd at the U.N. building',
    'A car from N.Y.C. on a street',
    'Pictures from NYC. at night',
    'A cake that says Happy Birthday Mr. President.',
    'A clock at 12 noon, i.e',
    'A bottle of wine, approx.',
    'A man at the St.',
    'A sign for MT. HOOD',
    'A SIGN FOR DR. PEPPER',
    'a can of dr. pepper on a desk',
    'a sign for dr pepper',
    'A pitcher of Dr Pepper',
    "A cat on Mr Rogers' lap",
    'A man with a Sr. title',
    "A bottle of Jack Daniel's whiskey",
    "McDonald's sign in the city",
    "A Macy's store window",
    'A clock showing 10:30 in the morning',
    'The time is 12:45pm on the clock',
    'A clock that reads 3:15 PM.',
    'A clock tower reading 1:00.',
    'A clock at 11:59:59 pm',
    'A $5 bill on a table',
    'A sign that says $3.99 for a slice',
    'A price tag of $ 10 on a shirt',
    'A menu with $12.50 burgers',
    'Pizza for only 5$ today',
    'A 50% off sign in a store window',
    'A shirt that is 100 % cotton',
    'A sign reading 2-for-1 deals',
    'A player wearing the number 23 jersey',
    'A jersey with #23 on the back',
    'A bus marked route #5',
    'A 747 jet parked at the gate',
    "The 1950's car on display",
    "A car from the '50s parked outside",
    'The 80s style living room',
    'A 2x4 board on the ground',
    'A 4x4 truck on a muddy road',
    'A 3-D movie poster',
    'A 3D printer on a desk',
    'A 10-year-old boy with a kite',
    'A man with 1,000 balloons',
    'A sign with 1.5 miles on it',
    'A speed limit sign of 25 mph.',
    'Temperature of 75°F on a sign',
    'A 45° angle on a ramp',
    'A sign that says 1/2 off',
    'Mix 1 1/2 cups of flour',
    'Half ½ of a pizza on a plate',
    'Three ¼ inch screws',
    'A cake that says 24/7 on it',
    'A poster about 9/11 memorial',
    'A sign with 5-10 minutes wait',
    'A player scoring 3-2 in a game',
    'The 2nd floor window of a house',
    'A 1st place ribbon on a cow',
    'The 3rd base coach',
    'A sign saying -5 degrees',
    'A score of +1 on the board',
    'A score board showing 0.5 seconds',
    'A man holding a .22 rifle',
    'version 2.0 software on a screen',
    "A room with a 6' tall ceiling",
    'A 6\'2" man with a bat',
    'A 5" tablet on the desk',
    'A 12-pack of soda',
    'A train number 4-5-6 leaving',
    'A phone number 555-1234 on a sign',
    'A sign for 1-800-FLOWERS',
    'An area code (212) on a sign',
    'A pizza cut in 8 slices.',
    'A 2 liter bottle of coke.',
    'A big 100 on a sign.',
    'The year 2015.',
    'The score is 21-14.',
    'Highway I-95 sign',
    'A sign for route 66.',
    "A dog's toy on the floor",
    "The dogs' bowls are empty",
    "A woman's hand holding a phone",
    "The children's toys on the floor",
    "A man who doesn't have a shirt",
    "A cat that can't reach the food",
    "The bus won't stop here",
    "There's a dog in the yard",
    "They're playing frisbee in the park",
    "We've got a big pizza",
    "I'm looking at a giraffe",
    "You'll see a zebra",
    "He'd like a sandwich",
    "A sign that says DON'T WALK",
    "A sign that reads Don't Feed The Animals",
    "It's a sunny day at the beach",
    "Two people who aren't looking",
    "A cat that isn't sleeping",
    "A dog that wasn't fed",
    "This ain't a cat",
    "A sign saying y'all come back",
    "A rock 'n' roll band on stage",
    "A sign for rock n' roll",
    "A clock at 3 o'clock",
    "A poster from the '90s",
    "A man with his kids' bikes",
    "James' car is red",
    "A boss's desk",
    'A man cannot reach the shelf',
    'A woman is gonna cut the cake',
    'They wanna play outside',
    'We gotta go now',
    'Lemme see the dog',
    'Gimme the ball',
    "A man 's shirt is blue",
    "A dog ' s bone",
    "A cat ' s toy",
    "The girl 's kite",
    "A womans' purse",
    "the man's and woman's hats",
    "A man's' shirt",
    "A DOG'S BONE",
    'A dog’s bone on the grass',
    'A man who doesn’t smile',
    'A woman’s purse on a table',
    'It’s a cat',
    "A 'tis the season sign",
    "'Twas the night before christmas book",
    "Y'know, a dog",
    "A shouldn't've sign",
    "I'd've eaten the cake",
    'A CANNOT sign',
    'A sign that says Cannot Enter',
    "d'you see the cat",
    'A sign that says "STOP" on a corner',
    'The words "Happy Birthday" on a cake',
    "A sign reading 'Bus Only' on the street",
    '"A dog on a couch"',
    "'a dog on a couch'",
    'A cake with “Happy Birthday” written on it',
    'A sign that says ‘No Parking’',
    'A man holding a sign that reads "Will work for food."',
    'A "no parking" sign',
    "A sign that says 'don't walk'",
    "A book titled ``Cats''",
    'A man saying "hello", and waving',
    "An 'X' on the map",
    "A big 'l' on the sign",
    "A ''strange'' cat",
    'A sign with "quotes".',
    "A sign with 'quotes'.",
    'A cat named "Mr. Whiskers"',
    'A man (wearing a hat) rides a bike',
    'A pizza (with pepperoni) on a plate',
    'A plate with food [blurry]',
    'A bus {red} on the road',
    'A cat (black and white).',
    '(A dog on a bed)',
    'A dog ( brown ) sitting',
    'A ball(red) on grass',
    'A man with a sign ((two))',
    'A sign reading :)',
    'A cat with a happy face :-)',
    'A smiley face ;) on a cake',
    'Two cats :( sad',
    'A man in a t-shirt and jeans',
    'A double-decker bus on the street',
    'A black-and-white photo of a train',
    'A well-known landmark -- the Eiffel Tower',
    'A man - wearing a hat - sits',
    'A man -wearing a hat- sits',
    'A dog--running fast',
    'A cat---sleeping',
    'A bus – going downtown',
    'A man — holding a bat',
    'A 10–15 minute walk',
    'A jack-in-the-box toy',
    'An e-mail on a screen',
    'A sign for the X-Men movie',
    'A man riding a skate-board-',
    '-A dog on a couch',
    'A dog on a couch -',
    'A U-turn sign',
    'A no U-turns sign',
    'A sign that reads re-open soon',
    "An ex-boyfriend's car",
    'a pro-choice sign',
    'an anti-war sign',
    'A Wi-Fi sign',
    'A man with a self-made sign',
    'A kite in mid-air',
    'a non-stick pan',
    'A man/woman with an umbrella',
    'A bagel w/ cream cheese',
    'A man w/o a shirt',
    'A salt/pepper shaker set',
    'A sign with and/or on it',
    'A black & white cat',
    'Black&white photo of a bus',
    'A&W root beer sign',
    'AT&T store front',
    'A sign for B&B hotel',
    'Salt & pepper shakers',
    "A sign that says Ben & Jerry's",
    'A ketchup/mustard bottle',
    'A sign for 50/50 raffle',
    'An http://www.example.com sign',
    'A sign for www.google.com',
    'A shirt that says google.com',
    'An email address bob@example.com on a sign',
    'A @twitter handle on a sign',
    'A #hashtag on a poster',
    'A cat... sleeping on a bed',
    'Looking out the window... at the rain',
    'A dog . . . running',
    'A man…holding an umbrella',
    'A cat sleeping...',
    'A dog running.....',
    'A cat.. with a hat',
    'A pizza!!!',
    'Is this a cat?',
    'A group of people standing around a table?!',
    'A man riding a wave on top of a surfboard.',
    'A kitchen with a stove,sink,and refrigerator',
    'A man.The dog is brown',
    'A dog ,with a bone',
    'A man on a horse .',
    'A bowl of fruit: apples, bananas and oranges',
    'Two giraffes eating; one is young',
    'A cat; a dog; a bird.',
    'Wow! A big cake',
    'A sign reads:"Welcome"',
    'A man;with a hat',
    'A train:red and blue',
    'A dog?A cat?',
    'End.',
    '.',
    '...',
    '!!!',
    '?',
    '',
    '   ',
    'A dog on a bed ',
    ' A dog on a bed',
    'A  dog   on  a bed',
    'A dog\ton a bed',
    'A cat sitting on a laptop keyboard .  ',
    'A café with outdoor seating',
    'A CAFÉ sign on a building',
    'A plate of crème brûlée',
    'A piñata hanging from a tree',
    'Jalapeños on a pizza',
    'A Pokémon toy on a shelf',
    'A sign for São Paulo',
    'A street in Zürich',
    'A naïve painting',
    'A façade of a building',
    'A man eating smörgåsbord',
    'A sign that says Ærø',
    'A Straße sign in Germany',
    'A dog 😀 on a couch',
    'A pizza 🍕 slice',
    'A thumbs up👍 from a man',
    'A heart ❤ on a cake',
    'A heart ♥ shaped cookie',
    'A star ★ on a tree',
    'A sign with a ✓ on it',
    'A sign saying → this way',
    'A price of €5 on a sign',
    'A price tag £10 on a scarf',
    'A 10¢ candy',
    'A ¥100 coin',
    'A Coca-Cola™ bottle',
    'The © sign on a photo',
    'A ®registered mark',
    'A 2×4 piece of wood',
    'A 5 × 5 grid',
    'A sign with 3 ÷ 3',
    'A ± sign',
    'A • bullet list',
    'The «quoted» text on a sign',
    'A sign with „German” quotes',
    'A Chinese sign with 寿司 on it',
    'A sign that says 東京',
    'A Japanese sign 「すし」',
    'A Russian sign Москва',
    'A Greek letter Σ on a shirt',
    'A sign in Arabic مرحبا',
    'A sign in Hebrew שלום',
    'A sign in Hindi नमस्ते',
    'A Korean sign 서울',
    'A dog\xa0on a bed',
    'A dog\u200bon a bed',
    'A soft\xadhyphen word',
    'A dog on a bed\u200d',
    'A sign with ½ off',
    'An ª and º symbol',
    'A micro µ sign',
    'A sign with ¿que? on it',
    'A sign that says ¡Hola!',
    'The 1st and 2ⁿᵈ place',
    'H₂O written on a bottle',
    'E=mc² written on a board',
    'A sign for Café René’s',
    'A woman’s “hat”',
    'A man ‘waving’',
]
