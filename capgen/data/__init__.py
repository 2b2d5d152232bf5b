from .datamodule import Batch, CaptionDataModule

__all__ = ["Batch", "CaptionDataModule"]
