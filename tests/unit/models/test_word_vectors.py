"""Pretrained word vectors: a file that would leave the embedding random or NaN is named with what is
wrong."""

import pytest

WORD_VECTOR_FILES = [
    # (bytes of the file, what the message must say)
    (b"", r"glove\.txt: the file holds no vectors \(it is empty\)"),
    (b"3 5\n\n", r"glove\.txt: the file holds no vectors \(only blank lines or a header\)"),
    (b"3000000 5\n" + bytes(range(256)) * 40, r"glove\.txt: the file is binary \(word2vec's \.bin format\?\)"),
    (b"red 0.1 0.2 nan 0.4 0.5\n", r"glove\.txt: line 1 \('red'\) holds a value that is not a finite number"),
    (b"dog 0.1 0.2 0.3 0.4 0.5\nred 0.1 inf 0.3 0.4 0.5\n", r"glove\.txt: line 2 \('red'\) holds a value that is not a finite"),
    (b"hund 0.1 0.2 0.3 0.4 0.5\nrot 0.1 0.2 0.3 0.4 0.5\n", r"glove\.txt: none of the vocabulary's 3 words is in the file"),
]


@pytest.mark.parametrize("data, message", WORD_VECTOR_FILES)
def test_a_word_vectors_file_that_would_leave_the_embedding_random_or_nan_is_named_with_what_is_wrong(tmp_path, data, message):
    from capgen.models.word_vectors import read_word_vectors
    from capgen.vocab import Vocabulary

    (tmp_path / "glove.txt").write_bytes(data)
    with pytest.raises(ValueError, match=r"^model\.module\.word_vectors=.*" + message):
        read_word_vectors(tmp_path / "glove.txt", Vocabulary.build(["a red dog"]), 5)
