from .attention import AttentionDecoder
from .captioner import Captioner, build_captioner
from .decoders import Decoder, LSTMDecoder, RNNDecoder
from .encoder import SmallCNN, TorchvisionEncoder
from .losses import caption_loss, doubly_stochastic

__all__ = ["AttentionDecoder", "Captioner", "Decoder", "LSTMDecoder", "RNNDecoder", "SmallCNN", "TorchvisionEncoder",
           "build_captioner", "caption_loss", "doubly_stochastic"]
