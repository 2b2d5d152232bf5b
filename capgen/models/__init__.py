from .attention import AttentionDecoder
from .captioner import Captioner
from .decoders import Decoder, LSTMDecoder, RNNDecoder
from .encoder import SmallCNN, TorchvisionEncoder

__all__ = ["AttentionDecoder", "Captioner", "Decoder", "LSTMDecoder", "RNNDecoder", "SmallCNN", "TorchvisionEncoder"]
