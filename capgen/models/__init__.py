from .attention import AttentionDecoder
from .captioner import Captioner, build_captioner
from .clip_encoder import ClipEncoder
from .decoders import Decoder, LSTMDecoder, RNNDecoder
from .encoder import SmallCNN, TorchvisionEncoder
from .losses import caption_loss, doubly_stochastic
from .timm_encoder import TimmEncoder
from .transformer import TransformerDecoder

__all__ = ["AttentionDecoder", "Captioner", "ClipEncoder", "Decoder", "LSTMDecoder", "RNNDecoder", "SmallCNN", "TimmEncoder",
           "TorchvisionEncoder", "TransformerDecoder", "build_captioner", "caption_loss", "doubly_stochastic"]
