from .attention import AttentionDecoder
from .captioner import Captioner, build_captioner
from .decoders import Decoder, LSTMDecoder, RNNDecoder
from .encoder import SmallCNN, TorchvisionEncoder
from .losses import caption_loss, doubly_stochastic
from .transformer import TransformerDecoder

__all__ = ["AttentionDecoder", "Captioner", "Decoder", "LSTMDecoder", "RNNDecoder", "SmallCNN", "TorchvisionEncoder",
           "TransformerDecoder", "build_captioner", "caption_loss", "doubly_stochastic"]
