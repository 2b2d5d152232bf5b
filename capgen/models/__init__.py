from .attention import AttentionDecoder
from .captioner import Captioner, build_captioner
from .clip_encoder import ClipEncoder
from .decoders import Decoder, LSTMDecoder, RNNDecoder
from .encoder import SmallCNN, TorchvisionEncoder
from .losses import caption_loss, doubly_stochastic
from .timm_encoder import TimmEncoder

__all__ = ["AttentionDecoder", "Captioner", "ClipEncoder", "Decoder", "LSTMDecoder", "RNNDecoder", "SmallCNN", "TimmEncoder",
           "TorchvisionEncoder", "build_captioner", "caption_loss", "doubly_stochastic"]
