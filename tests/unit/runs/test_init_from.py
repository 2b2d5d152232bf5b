"""init_from: a checkpoint whose vocabulary misses the data's words is refused unless accepted."""

import pytest


def test_init_from_a_checkpoint_whose_vocabulary_misses_the_datas_words_is_refused_unless_accepted():
    from types import SimpleNamespace

    from capgen.runs.init_from import check_coverage
    from capgen.vocab import Vocabulary

    data = [f"w{k} w{k + 1} w{k + 2}" for k in range(40)]  # 42 words
    other = SimpleNamespace(path="other/best.ckpt", vocab=Vocabulary.build(["w0 w1 w2 w3 w4 w5 cat sat"]))
    with pytest.raises(ValueError, match=r"^init_from=other/best\.ckpt: its vocabulary covers 6 of the 42 words .*"
                                         r"init_from_min_coverage=0\.14 \(0: any\)\.$"):
        check_coverage(other, data, min_freq=1, max_len=20, min_coverage=0.5)
    assert check_coverage(other, data, min_freq=1, max_len=20, min_coverage=0) == pytest.approx(6 / 42)
    same = SimpleNamespace(path="same.ckpt", vocab=Vocabulary.build(data))
    assert check_coverage(same, data, min_freq=1, max_len=20, min_coverage=0.5) == 1.0
    with pytest.raises(ValueError, match=r"^init_from_min_coverage=1\.5: a share from 0 to 1"):
        check_coverage(same, data, min_freq=1, max_len=20, min_coverage=1.5)
