"""nanoGPT-compatible GPT pretraining: `train(cfg, on_eval)` and `load_model(path)`.

This package never imports Optuna: sweeps drive it through `on_eval` alone.
"""

from trainer.checkpoint import load_model
from trainer.config import ConfigError, TrainConfig
from trainer.train import EvalMetrics, TrainResult, eval_points, release_freed_memory, tokens_per_iter, train

__all__ = ["ConfigError", "EvalMetrics", "TrainConfig", "TrainResult", "eval_points", "load_model",
           "release_freed_memory", "tokens_per_iter", "train"]
