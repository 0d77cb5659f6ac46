"""Training loops and torch.distributed helpers."""

from latentfit.train.trainer import TrainConfig, TrainResult, train, validation_bound

__all__ = ["TrainConfig", "TrainResult", "train", "validation_bound"]
