"""A run's curves and settings, read from a run dir of ours, a trial, or a nanoGPT console log.

Whatever the source, a diagnosis sees one `Curves`: the evaluations (train and val loss, and the
val loss's standard error where it was measured), the logged training losses, the run's settings
as a `trainer.TrainConfig` (the LR at any iteration is `trainer.get_lr` of its schedule), the
unique training tokens, and the settings that were not given and stand at a default.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from sweeps import trial_record
from sweeps.diagnosis import nanogpt
from sweeps.diagnosis.errors import DiagnosisError
from trainer import (CHECKPOINT_NAME, METRICS_NAME, TrainConfig, as_train_config, logged_records, prepare_data,
                     tokens_per_iter)

HYDRA_CONFIG = Path(".hydra") / "config.yaml"  # what `python -m trainer` saves in its run dir


@dataclass
class Eval:
    iter: int
    train_loss: float
    val_loss: float
    val_loss_se: Optional[float] = None  # None: not measured (nanoGPT prints no standard error)


@dataclass
class Curves:
    source: str  # what was read, for the report's first words
    kind: str  # "ours" or "nanogpt"
    evals: List[Eval]
    train: List[tuple]  # (iter, loss) of each logged iteration
    cfg: TrainConfig
    unique_train_tokens: Optional[int]  # None: not known (a nanoGPT log without --train-tokens etc.)
    tokens_per_iter: int
    num_params: int  # nanoGPT's count: every parameter but the position embeddings
    assumed: Dict[str, List[str]] = field(default_factory=dict)  # what was not given, by what it feeds
    data_files: List[str] = field(default_factory=list)  # parquet files, for the next command
    nanogpt_arguments: List[str] = field(default_factory=list)  # a nanoGPT run's settings as --key=value
    notes: List[str] = field(default_factory=list)

    @property
    def last_iter(self) -> int:
        return max([e.iter for e in self.evals] + [i for i, _ in self.train])

    @property
    def tokens_seen(self) -> int:
        return self.last_iter * self.tokens_per_iter

    @property
    def epochs(self) -> Optional[float]:
        return self.tokens_seen / self.unique_train_tokens if self.unique_train_tokens else None


def num_params(cfg: TrainConfig) -> int:
    """nanoGPT's `get_num_params()` for the config's GPT (tied embeddings, position ones left out)."""
    m = cfg.model
    d, bias = m.n_embd, int(m.bias)
    block = (2 * d * (1 + bias)  # two LayerNorms
             + 3 * d * d + 3 * d * bias + d * d + d * bias  # attention: qkv and projection
             + 4 * d * d + 4 * d * bias + 4 * d * d + d * bias)  # MLP
    return m.vocab_size * d + m.n_layer * block + d * (1 + bias)


# -- our run dirs ---------------------------------------------------------------------------------

def _records(path: Path) -> List[dict]:
    try:
        return logged_records(path)[0]  # a line cut short by a kill mid-write is left out
    except OSError as e:
        raise DiagnosisError(f"cannot read {path}: {e.strerror or e}") from None


def _config_of_run_dir(run_dir: Path) -> TrainConfig:
    """The run's config: the one `python -m trainer` saved, else the one in its checkpoint."""
    hydra_config = run_dir / HYDRA_CONFIG
    if hydra_config.is_file():
        from omegaconf import OmegaConf

        cfg = OmegaConf.load(hydra_config)
        cfg.out_dir = str(run_dir)  # saved unresolved (${now:...}): this dir is the value
        return as_train_config(cfg)
    ckpt = run_dir / CHECKPOINT_NAME
    if ckpt.is_file():
        import torch

        try:
            checkpoint = torch.load(ckpt, map_location="cpu", mmap=True, weights_only=False)
            return as_train_config(checkpoint["config"])
        except Exception as e:  # a truncated or foreign file: say so, in one line
            raise DiagnosisError(f"{ckpt}: cannot read its config ({type(e).__name__}: {str(e).splitlines()[0]}); "
                                 f"pass a run dir whose {HYDRA_CONFIG} or {CHECKPOINT_NAME} is intact") from None
    raise DiagnosisError(f"{run_dir}: no config beside {METRICS_NAME} (neither {HYDRA_CONFIG}, which "
                         f"`python -m trainer` writes, nor {CHECKPOINT_NAME}); diagnose a trial with "
                         f"--storage URL --study NAME instead")


def read_metrics(run_dir: Path, cfg: TrainConfig, source: str) -> Curves:
    """Curves from our `metrics.jsonl` (trainer/train.py writes one record per log and evaluation)."""
    path = run_dir / METRICS_NAME
    if not path.is_file():
        raise DiagnosisError(f"{run_dir}: no {METRICS_NAME} in it; pass a run dir of ours (it holds "
                             f"{METRICS_NAME}) or a nanoGPT console log")
    records = _records(path)
    evals = [Eval(int(r["iter"]), float(r["train_loss"]), float(r["val_loss"]), float(r["val_loss_se"]))
             for r in records if r.get("type") == "eval"]
    train = [(int(r["iter"]), float(r["loss"])) for r in records if r.get("type") == "train"]
    if not evals:
        raise DiagnosisError(f"{path}: no evaluation in it yet; the diagnosis needs the run's val losses "
                             f"(it evaluates every eval_interval={cfg.eval_interval} iterations)")
    unique = next((round(r["tokens"] / r["epochs"]) for r in records
                   if isinstance(r.get("epochs"), (int, float)) and r["epochs"] > 0 and r.get("tokens")), None)
    return Curves(source=source, kind="ours", evals=evals, train=train, cfg=cfg, unique_train_tokens=unique,
                  tokens_per_iter=tokens_per_iter(cfg), num_params=num_params(cfg),
                  data_files=list(cfg.data.files))


def read_run_dir(path: Path) -> Curves:
    path = Path(path)
    if not path.is_dir():
        raise DiagnosisError(f"{path}: not a folder; pass a run dir of ours or a nanoGPT console log")
    if not (path / METRICS_NAME).is_file():
        raise DiagnosisError(f"{path}: no {METRICS_NAME} in it; pass a run dir of ours (it holds "
                             f"{METRICS_NAME}) or a nanoGPT console log")
    return read_metrics(path, _config_of_run_dir(path), f"run dir {path}")


def read_trial(trial: Any) -> Curves:
    """Curves of a study's trial: its config and run dir from its user attrs (sweeps.trial_record)."""
    config, run_dir = trial_record.config_json(trial), trial_record.run_dir(trial)
    if config is None or run_dir is None:
        raise DiagnosisError(f"trial {trial.number} recorded no config or run dir (it failed before training)")
    if not Path(run_dir).is_dir():
        raise DiagnosisError(f"trial {trial.number}: its run dir {run_dir} is not there (a relative one is "
                             f"relative to the folder the study ran in: run this from there)")
    return read_metrics(Path(run_dir), as_train_config(json.loads(config)), f"trial {trial.number} ({run_dir})")


# -- nanoGPT logs ---------------------------------------------------------------------------------

# Which nanoGPT settings each part of the diagnosis reads: an assumed one lowers its confidence.
NEEDS = {
    "tokens": ["batch_size", "block_size", "gradient_accumulation_steps"],
    "schedule": ["learning_rate", "min_lr", "warmup_iters", "lr_decay_iters", "max_iters", "decay_lr"],
    "model": ["n_layer", "n_head", "n_embd", "block_size"],
    "eval": ["eval_iters", "batch_size"],
}


def read_nanogpt(path: Path, settings: nanogpt.NanoGPTSettings, log: nanogpt.NanoGPTLog,
                 train_tokens: Optional[int], data_files: List[str]) -> Curves:
    s = settings.values
    cfg = as_train_config(nanogpt.train_config_dict(s, log.vocab_size))
    per_iter = tokens_per_iter(cfg)
    assumed = {part: settings.assumed(keys) for part, keys in NEEDS.items()}
    notes = []
    if log.tokens_per_iter is not None:  # the log's own count: DDP's world size included
        assumed["tokens"] = []
        if log.tokens_per_iter != per_iter:
            notes.append(f"the log says {log.tokens_per_iter:,} tokens per iteration, the settings "
                         f"{per_iter:,} (DDP?); the log's count is used")
        per_iter = log.tokens_per_iter
    if log.num_params is not None:
        assumed["model"] = []
    evals = [Eval(i, t, v) for i, t, v in log.evals]
    arguments = [f"--{k}={v}" for k, v in s.items() if k in settings.given]
    return Curves(source=f"nanoGPT log {path}", kind="nanogpt", evals=evals, train=list(log.iters), cfg=cfg,
                  unique_train_tokens=train_tokens, tokens_per_iter=per_iter,
                  num_params=log.num_params or num_params(cfg), assumed=assumed, data_files=data_files,
                  nanogpt_arguments=arguments, notes=notes)


def count_train_tokens(train_tokens: Optional[int], train_bin: Optional[Path], data: List[str]) -> Optional[int]:
    """Unique training tokens from --train-tokens, --train-bin (nanoGPT's uint16 file) or --data
    (parquet files, tokenized by the trainer's data pipeline, less its val share)."""
    if train_tokens is not None:
        if train_tokens <= 0:
            raise DiagnosisError(f"--train-tokens {train_tokens}: must be a positive number of tokens")
        return train_tokens
    if train_bin is not None:
        if not Path(train_bin).is_file():
            raise DiagnosisError(f"--train-bin {train_bin}: no such file; pass nanoGPT's train.bin "
                                 f"(data/DATASET/train.bin)")
        size = Path(train_bin).stat().st_size
        if size == 0 or size % 2:
            raise DiagnosisError(f"--train-bin {train_bin}: {size} bytes is not a uint16 token file")
        return size // 2
    if data:
        from trainer import DataError

        cfg = as_train_config({"data": {"name": "parquet", "files": list(data)}})
        try:
            return prepare_data(cfg.data).train.num_tokens
        except DataError as e:
            raise DiagnosisError(f"--data: {e}") from None
    return None
