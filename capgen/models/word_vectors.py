"""Pretrained word vectors (GloVe's text format) for a decoder's word embedding.

A GloVe file has one word per line followed by its vector, separated by spaces:
    the 0.418 0.24968 -0.41242 ...
(word2vec's text format is the same with a first line "<words> <dims>", which is skipped).
Only the vocabulary's words are parsed; the others are skipped by their first token, so a
multi-GB file costs one pass of reading. Words the file lacks keep the embedding's own
random initialisation, and the special tokens (<pad>, <start>, <end>, <unk>) are never
looked up: <pad> stays the zero row nn.Embedding(padding_idx=0) keeps.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from ..vocab import SPECIALS, Vocabulary

log = logging.getLogger(__name__)

SETTING = "model.module.word_vectors"


def read_word_vectors(path: str | Path, vocab: Vocabulary, dim: int) -> dict[int, torch.Tensor]:
    """{word id: its vector (dim,)} for the vocabulary's words found in the file; a ValueError
    naming the setting when the file's vectors are not `dim` wide or a line cannot be read."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{SETTING}={path}: no such file; give a GloVe-format text file (one 'word v1 v2 ...' "
                                "per line), or null for no pretrained vectors")
    _check_text(path)
    wanted = {w: i for w, i in vocab.stoi.items() if i >= len(SPECIALS)}
    found: dict[int, torch.Tensor] = {}
    width = None
    number = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            line = line.rstrip("\n\r ")
            if not line:
                continue
            word, _, rest = line.partition(" ")
            if number == 1 and _is_header(line):
                continue
            if width is None:
                width = len(rest.split())
                if width != dim:
                    raise ValueError(
                        f"{SETTING}={path}: its vectors have {width} dimensions, but the decoder's word embedding has "
                        f"{dim} (model.decoder.embed_dim); set model.decoder.embed_dim={width}, or use vectors of {dim} "
                        "dimensions"
                    )
            if word not in wanted:
                continue
            values = rest.split()
            try:
                vector = torch.tensor([float(v) for v in values], dtype=torch.float32)
            except ValueError:
                vector = None
            if vector is None or vector.numel() != dim:
                raise ValueError(f"{SETTING}={path}: line {number} ({word!r}) is not {dim} numbers after its word; "
                                 "the file is damaged or not in GloVe's text format")
            if not torch.isfinite(vector).all():  # a NaN or inf row would make every loss NaN
                raise ValueError(f"{SETTING}={path}: line {number} ({word!r}) holds a value that is not a finite number "
                                 "(nan or inf); the file is damaged: replace it, or fix that line")
            found.setdefault(wanted[word], vector)  # the first line of a repeated word counts
    if width is None:
        what = "it is empty" if number == 0 else "only blank lines or a header"
        raise ValueError(f"{SETTING}={path}: the file holds no vectors ({what}); give a GloVe-format text file (one "
                         "'word v1 v2 ...' per line), or null for no pretrained vectors")
    if not found:
        raise ValueError(f"{SETTING}={path}: none of the vocabulary's {len(wanted)} words is in the file (e.g. "
                         f"{', '.join(list(wanted)[:3])}), so the embedding would stay random while the run says it "
                         "uses pretrained vectors; give vectors of the captions' language (lower-cased words, as "
                         "GloVe's), or null")
    return found


def _check_text(path: Path) -> None:
    """A ValueError when the file is not UTF-8 text: word2vec's binary .bin format, say, whose
    bytes would otherwise be read as one line of strange words and a wrong width."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    try:
        head.decode("utf-8")
        binary = b"\x00" in head
    except UnicodeDecodeError as e:
        binary = e.start < len(head) - 4  # not a character cut at the end of the sample
    if binary:
        raise ValueError(f"{SETTING}={path}: the file is binary (word2vec's .bin format?), not GloVe's text format; "
                         "convert it to text (gensim: KeyedVectors.load_word2vec_format(path, binary=True)"
                         ".save_word2vec_format(out, binary=False)), or give a GloVe .txt file")


def _is_header(line: str) -> bool:
    parts = line.split()
    return len(parts) == 2 and all(p.isdigit() for p in parts)


def load_word_vectors(embedding: nn.Embedding, path: str | Path, vocab: Vocabulary, freeze: bool) -> int:
    """Copy the file's vectors into `embedding` (V, E) rows of the words found; freeze the whole
    table when asked (words the file lacks then keep their random vectors). Logs and returns
    how many vocabulary words were found."""
    found = read_word_vectors(path, vocab, embedding.embedding_dim)
    with torch.no_grad():
        for index, vector in found.items():
            embedding.weight[index] = vector.to(embedding.weight.dtype)
    embedding.weight.requires_grad_(not freeze)
    words = len(vocab) - len(SPECIALS)
    log.info("word vectors: %d of %d vocabulary words found in %s (%.1f%%), %s; the other %d keep their random "
             "initialisation", len(found), words, path, 100 * len(found) / max(words, 1),
             "frozen" if freeze else "fine-tuned", words - len(found))
    return len(found)
