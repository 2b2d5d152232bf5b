"""Encoder + decoder, the network the LightningModule trains."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from omegaconf import OmegaConf
from torch import nn

from ..instantiate import instantiate
from . import search
from .decoders import Decoder, Rows
from .search import DecodeResult


class Captioner(nn.Module):
    """`decoder` is a factory (a Hydra `_partial_`) completed here with the vocabulary size
    and the encoder's feature width, so configs never repeat either."""

    def __init__(self, encoder: nn.Module, decoder: Callable[..., Decoder], vocab_size: int):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder(vocab_size=vocab_size, feature_dim=encoder.out_dim)

    @property
    def has_attention(self) -> bool:
        return self.decoder.has_attention

    @property
    def grid(self) -> int:
        return self.encoder.grid

    def use_torch_compile(self) -> None:
        """torch.compile the encoder and the decoder's per-step cell (where it has one) in place,
        so parameter names and checkpoints stay as they are. The cell's batch shrinks as
        captions end, hence dynamic shapes; the step loop itself stays in Python."""
        self.encoder.compile()
        if hasattr(self.decoder, "_cell"):
            self.decoder._cell = torch.compile(self.decoder._cell, dynamic=True)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images (B, 3, H, W) -> features (B, P, D), P = grid * grid.

        Floating-point (B, P, D) input is already features, a frozen encoder's from a
        capgen-prepare cache (float16): the encoder does not run, they only take the
        decoder's dtype.
        """
        if images.is_floating_point() and images.ndim == 3:
            if images.shape[-1] != self.decoder.feature_dim:
                raise ValueError(
                    f"features of width D={images.shape[-1]} given, but the decoder takes the encoder's "
                    f"D={self.decoder.feature_dim}: the feature cache was made by another encoder"
                )
            return images.to(next(self.decoder.parameters()).dtype)
        return self.encoder(images).flatten(2).transpose(1, 2)

    def forward(self, images: torch.Tensor, inputs: torch.Tensor, rows: Rows | None = None, words: bool = True):
        """Teacher forcing: images (N, 3, H, W) or features (N, P, D), inputs (R, T) -> logits
        (R, T, V), alphas (R, T, P) or None. `rows` says which image each caption describes
        (None: caption b of image b); each image is encoded once however many it has.
        words=False: the decoder's word layer (decoder.out) is left to the caller, which gets
        its input (R, T, E) instead of the logits (losses.word_layer_loss)."""
        return self.decoder(self.encode(images), inputs, rows, words=words)

    @torch.no_grad()
    def generate(
        self,
        images: torch.Tensor,
        max_len: int,
        start_id: int,
        end_id: int,
        beam_size: int = 1,
        length_penalty: float = 0.0,
        sample: bool = False,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> DecodeResult:
        """Captions for images (B, 3, H, W) or features (B, P, D); see capgen.models.search.

        beam_size 1: greedy; > 1: beam search ranked with `length_penalty` (greedy has no
        ranking, so the penalty only matters with a beam); sample=True: one random caption
        per image drawn with `temperature`, `top_k` and `generator`.
        """
        if beam_size < 1:
            raise ValueError(f"beam_size={beam_size}: must be at least 1")
        if sample and beam_size != 1:
            raise ValueError(f"sample=True with beam_size={beam_size}: sampling draws one caption, use beam_size=1")
        feats = self.encode(images)
        if sample:
            return search.sample(self.decoder, feats, max_len, start_id, end_id, temperature, top_k, generator)
        if beam_size == 1:
            return search.greedy(self.decoder, feats, max_len, start_id, end_id)
        return search.beam_search(self.decoder, feats, beam_size, max_len, start_id, end_id, length_penalty)

    @torch.no_grad()
    def decode(
        self,
        images: torch.Tensor,
        settings: search.DecodeSettings,
        start_id: int,
        end_id: int,
        unk_id: int,
        max_len: int,
        generator: torch.Generator | None = None,
    ) -> DecodeResult | search.NBestResult:
        """Captions for images (B, 3, H, W) or features (B, P, D) as `settings` say; max_len:
        the words per caption where settings.max_len is null (capgen.models.search.decode)."""
        return search.decode(self.decoder, self.encode(images), settings, start_id, end_id, unk_id, max_len, generator)


def build_captioner(net_config: Mapping, vocab_size: int) -> Captioner:
    """The Captioner a model config's `encoder` and `decoder` nodes describe (Hydra `_target_`s;
    a checkpoint keeps them as its `net_config`)."""
    cfg = OmegaConf.create(dict(net_config))
    return Captioner(encoder=instantiate(cfg.encoder), decoder=instantiate(cfg.decoder), vocab_size=vocab_size)
