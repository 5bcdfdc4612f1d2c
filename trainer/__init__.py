"""nanoGPT-compatible GPT pretraining: `train(cfg, on_eval)` and `load_model(path)`.

This package never imports Optuna or Hydra: sweeps drive it through `on_eval` alone, and use
only the names below.
"""

from trainer.checkpoint import CheckpointError, checkpoint_config, checkpoint_iter, load_model
from trainer.config import DECAY_SHAPES, ConfigError, ScheduleConfig, TrainConfig, as_train_config, check_config
from trainer.data import DataError, PreparedData, prepare_data
from trainer.distributed import is_main_process
from trainer.estimate import (CUDA_RESERVED_BYTES, StepMemory, device_peak_flops, flops_per_token, gpu_peak_flops,
                              largest_micro_batch, num_params, step_memory)
from trainer.interrupt import Interrupted, signals_interrupt
from trainer.memory import halved_micro_batch, is_out_of_memory, release_freed_memory
from trainer.schedule import (SHARES, Share, get_lr, min_lr_of, schedule_warnings, share_of, warmup_iters_of,
                              wsd_decay_start)
from trainer.train import (CHECKPOINT_NAME, METRICS_NAME, EvalMetrics, TrainResult, eval_points, logged_evals,
                           logged_records, lr_area, resolve_device, resolve_dtype, tokens_per_iter, train)

__all__ = ["CHECKPOINT_NAME", "CUDA_RESERVED_BYTES", "DECAY_SHAPES", "METRICS_NAME", "SHARES", "CheckpointError", "ConfigError", "DataError",
           "EvalMetrics", "Interrupted", "PreparedData", "ScheduleConfig", "Share", "StepMemory", "TrainConfig", "TrainResult", "as_train_config",
           "check_config", "checkpoint_config", "checkpoint_iter", "device_peak_flops", "eval_points",
           "flops_per_token", "get_lr", "gpu_peak_flops", "halved_micro_batch", "is_main_process", "is_out_of_memory",
           "largest_micro_batch", "load_model", "logged_evals", "logged_records", "lr_area", "min_lr_of", "num_params", "prepare_data", "release_freed_memory",
           "resolve_device", "resolve_dtype", "schedule_warnings", "share_of", "signals_interrupt", "step_memory",
           "tokens_per_iter", "train", "warmup_iters_of", "wsd_decay_start"]
