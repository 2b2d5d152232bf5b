"""capgen: image captioning with RNN, LSTM and attention-LSTM decoders."""

__version__ = "0.1.0"
