"""CIDEr-D of captions given as word ids, fast enough to reward every sampled caption of every
training step (self-critical training, capgen.models.scst).

It computes what pycocoevalcap's `Cider` (the official CIDEr-D: n-grams 1-4, tf-idf vectors,
counts clipped to the reference's, a Gaussian length penalty of sigma 6, x10) gives each
image, with two differences of setting, not of formula:

- the document frequencies come once from a fixed set of references (the training split's,
  as the self-critical reference code does), not from the references being scored; so
  pycocoevalcap gives the same per-image scores when it scores exactly those references;
- captions are word ids, not strings: the references as the vocabulary encodes them (cut to
  its max_len, rare words as <unk>), with their <end>, and the scored caption with its <end>
  when it has one. The <end> is a word, as in the reference code, so a caption that stops
  where the references do scores the n-grams that end it.

How. Every n-gram of the references gets a dense id, order by order: a k-gram's key is
(id of its first k-1 words) * V + its last word, and the sorted keys of the references'
k-grams are the table the ids index (no re-tokenising, no Python dictionaries). A caption's
k-grams are looked up in it with one searchsorted per order; an unseen one has no id (its
document frequency is 0). Then, per order k, for the N captions at once:
    tf_h    how often each of its k-grams occurs in the caption: (N, L, L) window equality
    tf_r    how often it occurs in each reference of its image: (N, R, L, L') id equality
    dot     sum over its distinct k-grams of min(tf_h, tf_r) * tf_r * idf^2     (N, R)
and the references' vector norms and lengths are computed once. Shapes: N captions, L their
width, R references per image (padded), L' their width, V the vocabulary size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ..vocab import Vocabulary

PAD_ID = 0  # capgen.vocab.Vocabulary.pad_id


class CiderDReward:
    """reward(image_ids (N,), tokens (N, L)) -> CIDEr-D (N,) float64, each caption against the
    references of its image; document frequencies from all `references`.

    references: image id -> that image's captions as word-id sequences (their <end>
    included; no <start>, no padding). tokens: one caption per row, word ids then <pad>=0
    (capgen.models.search's DecodeResult.tokens: the <end> included where the caption has one).
    """

    def __init__(self, references: Mapping[int, Sequence[Sequence[int]]], vocab_size: int, n: int = 4, sigma: float = 6.0):
        if not references:
            raise ValueError("CiderDReward: no references given; the document frequencies need the training captions")
        empty = [i for i, refs in references.items() if not refs or any(len(r) == 0 for r in refs)]
        if empty:
            raise ValueError(f"CiderDReward: images {empty[:5]} have no reference or an empty one; every image needs "
                             "at least one reference of at least one word")
        self.n, self.sigma, self.vocab_size = n, sigma, vocab_size
        ids = sorted(references)
        self.image_ids = torch.tensor(ids, dtype=torch.long)  # (M,) sorted
        counts = torch.tensor([len(references[i]) for i in ids])  # (M,) references per image
        captions = [r for i in ids for r in references[i]]
        self.ref_lengths = torch.tensor([len(c) for c in captions])  # (R_all,) tokens with <end>
        flat = torch.tensor([t for c in captions for t in c], dtype=torch.long)
        if int(flat.max()) >= vocab_size or int(flat.min()) <= PAD_ID:
            raise ValueError(f"CiderDReward: reference word ids must lie in 1..{vocab_size - 1} (vocab_size={vocab_size})")
        # (R_all, Lr) word ids, <pad> after each, filled in one scatter
        R, Lr = len(captions), int(self.ref_lengths.max())
        row = torch.repeat_interleave(torch.arange(R), self.ref_lengths)
        col = torch.arange(len(flat)) - torch.repeat_interleave(torch.cumsum(self.ref_lengths, 0) - self.ref_lengths, self.ref_lengths)
        self.ref_tokens = torch.zeros(R, Lr, dtype=torch.long)
        self.ref_tokens[row, col] = flat
        # image row -> its references' rows, -1 where it has fewer than the most
        starts = torch.cumsum(counts, 0) - counts
        slots = torch.arange(int(counts.max()))
        self.image_refs = torch.where(slots < counts[:, None], starts[:, None] + slots, -1)  # (M, Rmax)
        self.ref_count = counts.double()
        # log of the number of images: pycocoevalcap's ref_len
        self.log_images = math.log(float(len(ids)))

        # The n-gram tables, order by order; each reference's n-gram ids give the document
        # frequencies and its norms. numpy's sort for these one-off passes (several times torch's on CPU).
        ref_image = torch.repeat_interleave(torch.arange(len(ids)), counts)  # (R_all,) image row of each ref
        valid = self._windows_valid(self.ref_lengths, Lr)
        self.keys: list[torch.Tensor] = []  # per order: sorted distinct keys of the references' k-grams
        self.idf: list[torch.Tensor] = []  # per order: (G_k,) float64, log(M) - log(df)
        self.ref_norms = torch.zeros(R, n, dtype=torch.float64)  # (R_all, n)
        prefix = None
        for k in range(n):
            keys = self._keys(self.ref_tokens, prefix, k)  # (R_all, Lr)
            table, gid = np.unique(keys[valid[k]].numpy(), return_inverse=True)
            gid = torch.from_numpy(gid.reshape(-1))
            gids = torch.full_like(keys, -1)  # (R_all, Lr) the k-gram id at each position, -1 where none starts
            gids[valid[k]] = gid
            G = len(table)
            # each reference's distinct k-grams with their counts
            ref_of = torch.arange(R)[:, None].expand_as(gids)[valid[k]]
            ref_gram, tf = _distinct((ref_of * G + gid).numpy())
            ref_gram, tf = torch.from_numpy(ref_gram), torch.from_numpy(tf)
            # document frequency: the images whose references hold the k-gram
            image_gram, _ = _distinct((ref_image[ref_gram // G] * G + ref_gram % G).numpy())
            df = torch.bincount(torch.from_numpy(image_gram % G), minlength=G).double()
            idf = self.log_images - torch.log(df)  # every table k-gram is in some image: df >= 1
            # each reference's norm: sqrt(sum over its distinct k-grams of (tf * idf)^2)
            weight = (tf.double() * idf[ref_gram % G]) ** 2
            self.ref_norms[:, k] = torch.zeros(R, dtype=torch.float64).index_add_(0, ref_gram // G, weight).sqrt()
            self.keys.append(torch.from_numpy(table))
            self.idf.append(idf)
            prefix = gids
        self.device = torch.device("cpu")

    @classmethod
    def from_captions(cls, references: Mapping[int, Sequence[str]], vocab: Vocabulary, **kw) -> CiderDReward:
        """From reference texts (image id -> captions), encoded as training encodes them: the
        vocabulary's words (cut to its max_len, rare ones <unk>) and <end>."""
        encoded = {int(i): [vocab.encode(c)[1:] for c in caps] for i, caps in references.items()}
        return cls(encoded, len(vocab), **kw)

    # ----- n-grams ------------------------------------------------------------------------
    def _keys(self, tokens: torch.Tensor, prefix: torch.Tensor | None, k: int) -> torch.Tensor:
        """Keys of the (k+1)-grams starting at each position of tokens (X, L): the token for
        unigrams, else prefix gid * V + the k-gram's last token; -1 where the k-gram's first k
        words are unseen (then so is the whole) or it runs past the row."""
        if prefix is None:
            return tokens.clone()
        L = tokens.shape[1]
        last = torch.full_like(tokens, -1)
        last[:, : max(L - k, 0)] = tokens[:, k:]  # nothing when the rows are narrower than the k-gram
        return torch.where((prefix >= 0) & (last >= 0), prefix * self.vocab_size + last, -1)

    def _windows_valid(self, lengths: torch.Tensor, L: int) -> list[torch.Tensor]:
        """Per order k (0-based: k+1 words), (X, L): a (k+1)-gram starts at the position."""
        positions = torch.arange(L, device=lengths.device)
        return [positions[None, :] + k < lengths[:, None] for k in range(self.n)]

    def _gids(self, tokens: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        """Per order, (X, L) the gid of the n-gram starting at each position, -1 where none
        starts or the references never hold it."""
        valid = self._windows_valid(lengths, tokens.shape[1])
        out, prefix = [], None
        for k in range(self.n):
            keys = self._keys(tokens, prefix, k)
            table = self.keys[k]
            if len(table) == 0:  # no reference is k+1 words long: no k-gram has an id
                gids = torch.full_like(keys, -1)
            else:
                pos = torch.searchsorted(table, keys).clamp(max=len(table) - 1)
                gids = torch.where(valid[k] & (keys >= 0) & (table[pos] == keys), pos, -1)
            out.append(gids)
            prefix = gids
        return out

    # ----- scoring --------------------------------------------------------------------------
    def to(self, device: torch.device | str) -> CiderDReward:
        """The tables on `device` (scoring runs where they are)."""
        device = torch.device(device)
        for name, value in list(vars(self).items()):
            if torch.is_tensor(value):
                setattr(self, name, value.to(device))
            elif isinstance(value, list) and value and torch.is_tensor(value[0]):
                setattr(self, name, [v.to(device) for v in value])
        self.device = device
        return self

    def rows(self, image_ids: torch.Tensor) -> torch.Tensor:
        """(N,) image ids -> their rows in the tables; ValueError for an image without references."""
        image_ids = image_ids.to(self.device).long()
        pos = torch.searchsorted(self.image_ids, image_ids).clamp(max=len(self.image_ids) - 1)
        missing = self.image_ids[pos] != image_ids
        if missing.any():
            raise ValueError(f"CiderDReward: no references for image ids {image_ids[missing][:5].tolist()}; the "
                             "reward scores training images against the references it was built from")
        return pos

    def __call__(self, image_ids: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """CIDEr-D (N,) float64 of each caption of tokens (N, L) against the references of
        image_ids (N,), on tokens' device."""
        out_device = tokens.device
        tokens = tokens.to(self.device).long()
        N, L = tokens.shape
        rows = self.rows(image_ids)
        # The references of the distinct images, computed once however many captions each has.
        images, which = torch.unique(rows, return_inverse=True)  # (U,), (N,) caption -> image
        ref_rows = self.image_refs[images]  # (U, Rmax), -1 padding
        has_ref = ref_rows >= 0
        ref_rows = ref_rows.clamp(min=0)
        U, Rmax = ref_rows.shape
        ref_tokens = self.ref_tokens[ref_rows.view(-1)]  # (U*Rmax, Lr)
        ref_lengths = torch.where(has_ref.view(-1), self.ref_lengths[ref_rows.view(-1)], 0)
        ref_gids = [g.view(U, Rmax, -1)[which] for g in self._gids(ref_tokens, ref_lengths)]  # (N, Rmax, Lr) each
        ref_norms = self.ref_norms[ref_rows][which]  # (N, Rmax, n)

        lengths = (tokens != PAD_ID).sum(1)  # (N,)
        gids = self._gids(tokens, lengths)  # (N, L) each
        valid = self._windows_valid(lengths, L)
        positions = torch.arange(L, device=self.device)
        earlier = positions[None, :] < positions[:, None]  # (L, L): j < i
        words_equal = tokens[:, :, None] == tokens[:, None, :]  # (N, L, L)
        same = words_equal  # (N, L, L) for unigrams
        sims = torch.zeros(N, Rmax, self.n, dtype=torch.float64, device=self.device)
        for k in range(self.n):
            # whether the k-grams at i and j are the same words: the (k-1)-grams at i and j, and
            # the words at i+k and j+k; within the valid windows only
            if k:
                shifted = torch.zeros_like(words_equal)
                shifted[:, : max(L - k, 0), : max(L - k, 0)] = words_equal[:, k:, k:]  # none in rows under k+1 wide
                same = same & shifted
            same_k = same & valid[k][:, :, None] & valid[k][:, None, :]
            tf_h = same_k.sum(-1).double()  # (N, L) occurrences of the k-gram at i in its caption
            first = valid[k] & ~(same_k & earlier).any(-1)  # its first occurrence stands for each distinct k-gram
            g = gids[k]
            seen = self.idf[k][g.clamp(min=0)] if len(self.idf[k]) else torch.zeros_like(g, dtype=torch.float64)
            idf = torch.where(g >= 0, seen, self.log_images)  # unseen: df 0 -> log(max(1, 0)) = 0
            idf = torch.where(first, idf, 0.0)
            norm_h = ((tf_h * idf) ** 2).sum(1).sqrt()  # (N,)
            # occurrences in each reference: gids are equal iff the words are (-1 in the
            # references' windows without a k-gram, -2 for the caption's unseen k-grams)
            probe = torch.where(g >= 0, g, -2)
            tf_r = (probe[:, None, :, None] == ref_gids[k][:, :, None, :]).sum(-1).double()  # (N, Rmax, L)
            dot = (torch.minimum(tf_h[:, None], tf_r) * tf_r * idf[:, None] ** 2).sum(-1)  # (N, Rmax)
            denom = norm_h[:, None] * ref_norms[..., k]
            sims[..., k] = torch.where(denom != 0, dot / denom.masked_fill(denom == 0, 1.0), dot)
        # pycocoevalcap's caption "length" counts its bigrams: len - 1 (0 for an empty caption)
        delta = (lengths - 1).clamp(min=0).double()[:, None] - (ref_lengths.view(U, Rmax)[which] - 1).clamp(min=0).double()
        penalty = torch.exp(-(delta**2) / (2 * self.sigma**2))  # (N, Rmax)
        per_ref = sims.mean(-1) * penalty * has_ref[which]  # (N, Rmax)
        scores = per_ref.sum(1) / self.ref_count[images][which] * 10.0
        return scores.to(out_device)


def _distinct(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sorted distinct values and how often each occurs (np.unique's hash path, taken
    when no inverse is asked for, is several times slower than sorting on these arrays)."""
    ordered = np.sort(values)
    new = np.empty(len(ordered), dtype=bool)
    new[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    return ordered[starts], np.diff(np.append(starts, len(ordered)))
