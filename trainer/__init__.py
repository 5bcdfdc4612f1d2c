"""nanoGPT-compatible GPT pretraining: `train(cfg, on_eval)` and `load_model(path)`.

This package never imports Optuna or Hydra: sweeps drive it through `on_eval` alone, and use
only the names below.
"""

from trainer.checkpoint import CheckpointError, checkpoint_config, load_model
from trainer.config import ConfigError, TrainConfig, as_train_config, check_config
from trainer.data import DataError, prepare_data
from trainer.interrupt import Interrupted, signals_interrupt
from trainer.memory import release_freed_memory
from trainer.schedule import SHARES, Share, get_lr, schedule_warnings, share_of, warmup_iters_of
from trainer.train import (CHECKPOINT_NAME, METRICS_NAME, EvalMetrics, TrainResult, eval_points, lr_area, resolve_device,
                           resolve_dtype, tokens_per_iter, train)

__all__ = ["CHECKPOINT_NAME", "METRICS_NAME", "SHARES", "CheckpointError", "ConfigError", "DataError", "EvalMetrics", "Interrupted", "Share", "TrainConfig",
           "TrainResult", "as_train_config", "check_config", "checkpoint_config", "eval_points", "get_lr", "load_model",
           "lr_area", "prepare_data", "release_freed_memory", "resolve_device", "resolve_dtype", "schedule_warnings", "share_of",
           "signals_interrupt", "tokens_per_iter", "train", "warmup_iters_of"]
