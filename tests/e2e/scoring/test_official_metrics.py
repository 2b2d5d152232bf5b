"""capgen's caption scores against pycocoevalcap's scorers run the official way.

The tests that run Java (the PTB tokenizer, METEOR) skip only when java is not on PATH.
"""

import logging
import shutil

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from capgen.metrics import captions as metrics
from capgen.metrics.captions import ptb_tokenize_java, score_captions
from capgen.tokenizer import tokenize

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="the official tokenizer and METEOR need java")

# 30 images, COCO-style: a prediction and four or five references each, with the
# punctuation, numbers, abbreviations and quotes real captions have.
DATA = {
    101: ("A man riding a wave on top of a surfboard.",
          ["A surfer rides a large wave in the ocean.", "A man on a surfboard riding a wave.",
           "Surfer in a black wetsuit catching a wave", "a person surfing on a big blue wave .",
           "A man is surfing on a wave in the ocean"]),
    102: ("A kitchen with a stove, sink, and refrigerator.",
          ["A kitchen with white cabinets, a stove and a fridge.", "A clean kitchen with a sink and an oven",
           "The kitchen has a refrigerator, stove, and microwave.", "An empty kitchen with wooden floors."]),
    103: ("Two giraffes standing next to each other in a field.",
          ["Two giraffes are standing in a grassy field.", "A pair of giraffes near some trees",
           "two giraffes eating leaves from a tree", "Giraffes standing together in the wild.",
           "A couple of giraffes in an enclosure at the zoo"]),
    104: ("A dog's toy on the floor next to a couch.",
          ["A dog toy lying on the floor by a sofa.", "A chew toy on a living room carpet.",
           "The dog's ball is on the floor.", "A toy for a dog on a rug near a couch"]),
    105: ("A clock tower showing 10:30 on a sunny day.",
          ["A tall clock tower with the time 10:30.", "A clock on a tower against a blue sky",
           "The clock reads 10:30 in the morning.", "A brick clock tower on a clear day",
           "A large clock on the side of a building."]),
    106: ("A bus that says \"Downtown\" driving on a street.",
          ["A city bus with \"Downtown\" on its sign.", "A red and white bus on a city street.",
           "The bus is driving down the road.", "A public transit bus going downtown"]),
    107: ("A woman holding an umbrella in the rain.",
          ["A woman with a black umbrella walks in the rain.", "A lady under an umbrella on a rainy day",
           "Someone holding an umbrella on a wet sidewalk.", "A woman walking with her umbrella open."]),
    108: ("A plate of food with broccoli, rice and chicken.",
          ["A plate with chicken, rice, and broccoli on it.", "A healthy meal on a white plate",
           "Chicken and rice with a side of broccoli.", "A dinner plate full of food.",
           "Broccoli, rice & chicken on a plate"]),
    109: ("A cat laying on top of a laptop keyboard.",
          ["A cat sleeping on a laptop.", "A gray cat lies across the keyboard of a computer.",
           "A kitten resting on an open laptop", "The cat is on the laptop's keyboard."]),
    110: ("A baseball player swinging a bat at a ball.",
          ["A batter swings at a pitch during a game.", "A baseball player is about to hit the ball.",
           "A man in a uniform swinging a baseball bat", "A player at home plate swinging."]),
    111: ("A street sign for St. Mark's Pl. and 3rd Ave.",
          ["A street sign at the corner of St. Mark's Place and 3rd Avenue.",
           "Two green street signs on a pole.", "Street signs in New York City (NYC).",
           "A sign for St. Marks Pl. on a post"]),
    112: ("A train traveling down tracks next to a platform.",
          ["A passenger train pulling into a station.", "A train on the tracks by a platform",
           "A yellow and blue train at the station.", "The train is stopped next to the platform."]),
    113: ("Two people playing frisbee in a park.",
          ["Two men throwing a frisbee on the grass.", "A couple of people play with a frisbee.",
           "Two friends playing frisbee at the park", "People in a park throwing a flying disc."]),
    114: ("A pizza with pepperoni and cheese on a table.",
          ["A pepperoni pizza sitting on a wooden table.", "A large pizza with lots of cheese.",
           "A whole pizza (pepperoni) on a tray", "A hot pizza ready to be eaten."]),
    115: ("A group of people standing around a table.",
          ["People gathered around a table at a party.", "A group of friends standing by a table.",
           "Several people stand near a table with food.", "A crowd around a buffet table"]),
    116: ("An airplane flying over the U.S. coast.",
          ["A jet plane flying over the ocean.", "An airplane in the sky above the coast.",
           "A U.S. Air Force plane flying.", "A large airliner flying near the shore"]),
    117: ("A teddy bear sitting on a bed.",
          ["A brown teddy bear on a bed.", "A stuffed bear sits on the pillow.",
           "A teddy bear is placed on a made bed", "A child's teddy bear on the bed."]),
    118: ("A man in a t-shirt and jeans holding a skateboard.",
          ["A man holding his skateboard on the street.", "A skateboarder in a T-shirt and jeans",
           "A young man carrying a skate board", "A guy with a skateboard under his arm."]),
    119: ("A sign that says $5 for a slice of pizza.",
          ["A sign advertising pizza slices for $5.", "A pizza shop sign with prices",
           "A menu board: $5 per slice.", "The price of pizza is 5 dollars a slice."]),
    120: ("A black and white photo of a horse.",
          ["A black-and-white photo of a horse in a field.", "An old photo of a horse",
           "A horse standing in a field, black & white.", "A monochrome picture of a pony."]),
    121: ("A bathroom with a toilet and a sink.",
          ["A small bathroom with a white toilet and sink.", "A toilet next to a sink in a bathroom.",
           "A clean bathroom with tiled walls", "The restroom has a toilet, a sink and a mirror."]),
    122: ("A motorcycle parked on the side of the road.",
          ["A red motorcycle parked by the road.", "A motorbike on the side of a street.",
           "A parked motorcycle near a curb", "The motorcycle is parked on the shoulder of the road."]),
    123: ("Elephants walking in a line in the dirt.",
          ["A herd of elephants walking through the dirt.", "Three elephants walk in a row.",
           "Elephants walking one behind the other", "A line of elephants in a dusty field."]),
    124: ("A boy flying a kite on a beach.",
          ["A young boy flies a kite at the beach.", "A child with a kite by the ocean.",
           "A boy on the sand flying a colorful kite", "A kid is flying a kite near the water."]),
    125: ("A vase of flowers on a table...",
          ["A vase full of flowers on a table.", "Flowers in a glass vase.",
           "A bouquet of roses in a vase on the table", "A table with a vase of red flowers."]),
    126: ("A man on a cell phone at 5 p.m. on a street.",
          ["A man talking on his cell phone on a street.", "A man walking while on the phone",
           "Someone on a cellphone in the city.", "A guy making a call on a busy sidewalk."]),
    127: ("A zebra standing in a grassy field.",
          ["A zebra grazing in the grass.", "One zebra standing in a field.",
           "A zebra in the wild on a sunny day", "A black and white zebra in tall grass."]),
    128: ("Two cats sleeping on a couch together.",
          ["Two cats curled up on a sofa.", "A pair of cats asleep on a couch.",
           "Two kittens napping on the couch", "The two cats are sleeping on the couch's cushion."]),
    129: ("A tennis player hitting a ball with a racket.",
          ["A tennis player swings her racquet at the ball.", "A woman playing tennis on a court.",
           "A player returns the ball during a tennis match", "A tennis player in white hitting a ball."]),
    130: ("A bowl of fruit: apples, bananas and oranges.",
          ["A bowl filled with apples, bananas, and oranges.", "A fruit bowl on a table",
           "A bowl with bananas and apples in it", "Some fruit in a wooden bowl."]),
}
PREDS = {i: p for i, (p, _) in DATA.items()}
REFS = {i: r for i, (_, r) in DATA.items()}
FOUR = ("BLEU", "METEOR", "ROUGE-L", "CIDEr")


@pytest.fixture(scope="module")
def official():
    """pycocoevalcap run as COCOEvalCap runs it: PTBTokenizer on references and predictions,
    then its scorers (a fresh Meteor) on the tokenized captions."""
    gts = PTBTokenizer().tokenize({i: [{"caption": r} for r in refs] for i, refs in REFS.items()})
    res = PTBTokenizer().tokenize({i: [{"caption": p}] for i, p in PREDS.items()})
    meteor = Meteor()
    try:
        meteor_score = meteor.compute_score(gts, res)[0]
    finally:
        meteor.meteor_p.stdin.close()
        meteor.meteor_p.kill()
        meteor.meteor_p.wait()
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores = {f"BLEU-{n + 1}": b for n, b in enumerate(bleu)}
    scores["METEOR"] = meteor_score
    scores["ROUGE-L"] = Rouge().compute_score(gts, res)[0]
    scores["CIDEr"] = Cider().compute_score(gts, res)[0]
    return gts, res, scores


@needs_java
@pytest.mark.parametrize("tokenizer", ["java", "python", "auto"])
def test_scores_equal_pycocoevalcap_scorers_on_ptb_tokens(official, tokenizer):
    _, _, expected = official
    scores = score_captions(PREDS, REFS, metrics=FOUR, tokenizer=tokenizer)
    assert scores == expected
    assert 0 < expected["BLEU-4"] < expected["BLEU-1"] < 1 and 0 < expected["METEOR"] < 1 and expected["CIDEr"] > 0


@needs_java
def test_java_and_python_tokenizers_give_the_official_tokens(official):
    gts, res, _ = official
    refs = [r for i in REFS for r in REFS[i]]
    want = [c for i in REFS for c in gts[i]]
    assert [" ".join(t) for t in ptb_tokenize_java(refs)] == want
    assert [" ".join(tokenize(r)) for r in refs] == want
    assert [" ".join(tokenize(PREDS[i])) for i in PREDS] == [res[i][0] for i in PREDS]
    # a line break inside a caption would shift every later caption in pycocoevalcap
    assert ptb_tokenize_java(["a dog\ron a\u2028bed", "a cat."]) == [["a", "dog", "on", "a", "bed"], ["a", "cat"]]


@needs_java
def test_meteor_keeps_one_subprocess_and_scores_like_a_fresh_one(official):
    _, _, expected = official
    first = score_captions(PREDS, REFS, metrics=("METEOR",))
    meteor = metrics._METEOR.get()
    pid = meteor.meteor_p.pid
    again = score_captions(PREDS, REFS, metrics=("METEOR",))
    assert metrics._METEOR.get() is meteor and meteor.meteor_p.pid == pid and meteor.meteor_p.poll() is None
    assert first == again == {"METEOR": expected["METEOR"]}
    # a dead JVM is replaced on the next call; close() ends it (atexit calls it too)
    meteor.meteor_p.kill()
    meteor.meteor_p.wait()
    assert score_captions(PREDS, REFS, metrics=("METEOR",)) == first
    replacement = metrics._METEOR.get()
    assert replacement is not meteor and replacement.meteor_p.poll() is None
    metrics._METEOR.close()
    assert replacement.meteor_p.poll() is not None


def test_spice_without_its_models_is_skipped_with_one_log_line(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(metrics, "_SPICE_MODELS", [tmp_path / "stanford-corenlp-3.6.0.jar"])
    monkeypatch.setattr(metrics, "_spice_warned", False)
    assert not metrics.spice_available()
    with caplog.at_level(logging.WARNING, logger="capgen.metrics"):
        scores = score_captions(PREDS, REFS, metrics=("BLEU", "ROUGE-L", "CIDEr", "SPICE"))
        again = score_captions(PREDS, REFS, metrics=("BLEU", "SPICE"))
    assert set(scores) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr"}
    assert set(again) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4"}
    skipped = [r for r in caplog.records if "SPICE skipped" in r.getMessage()]
    assert len(skipped) == 1 and skipped[0].levelno == logging.WARNING


def test_unknown_metric_or_tokenizer_and_bad_references_are_clear_errors():
    with pytest.raises(ValueError, match=r"unknown caption metrics \['BLEU-4'\].*METEOR"):
        score_captions(PREDS, REFS, metrics=("BLEU-4",))
    with pytest.raises(ValueError, match="tokenizer must be one of"):
        score_captions(PREDS, REFS, tokenizer="spacy")
    with pytest.raises(ValueError, match="empty reference list for image ids \\[101\\]"):
        score_captions(PREDS, {**REFS, 101: []})
    with pytest.raises(KeyError, match="no references for image ids"):
        score_captions({999: "a cat"}, REFS)


def test_meteor_without_java_says_so(monkeypatch):
    monkeypatch.setattr(metrics.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="METEOR .* needs java"):
        score_captions(PREDS, REFS, metrics=("METEOR",))
    # "auto" falls back to the Python tokenizer
    assert score_captions(PREDS, REFS, tokenizer="auto") == score_captions(PREDS, REFS, tokenizer="python")
