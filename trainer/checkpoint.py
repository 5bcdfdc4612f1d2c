"""Checkpoints in nanoGPT's format, written atomically and loaded without running pickled code."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from trainer.config import ConfigError
from trainer.model import GPT, GPTConfig

COMPILE_PREFIX = "_orig_mod."  # what torch.compile puts in front of every state-dict key
MODEL_ARG_KEYS = ("n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size", "dropout")


class CheckpointError(ConfigError):
    """A checkpoint that cannot be written or read; the message names the file and what to do."""


def _first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"


def save_checkpoint(checkpoint: dict, path: Path) -> None:
    """Write to a temp file beside `path`, fsync, then rename over it: a crash, Ctrl-C or a full
    disk mid-write leaves the previous checkpoint intact. A failed write is a CheckpointError."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a checkpoint is an ordinary file
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, (OSError, RuntimeError)):  # torch reports a short write as "unexpected pos ..."
            kept = "the previous one is intact" if path.is_file() else "none was written before"
            raise CheckpointError(f"cannot write checkpoint {path} ({_first_line(e)}; is the disk full?); "
                                  f"{kept}; free space and resume with init_from=resume") from None
        raise


def _load(path: Path, device: str, **kwargs) -> dict:
    """torch.load without running pickled code; CheckpointError for a file that is not one."""
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True, **kwargs)
    except Exception as e:  # noqa: BLE001 - truncated, foreign or unreadable: one clear message
        raise CheckpointError(f"{path} is not a readable checkpoint ({_first_line(e)}): truncated by a copy or "
                              f"a full disk, or not a torch file; move it away to start afresh, or restore it") from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path} is not a GPT checkpoint: it holds a {type(checkpoint).__name__}, not a dict")
    return checkpoint


def load_checkpoint(path: Path, device: str = "cpu") -> dict:
    """Load a checkpoint (ours or nanoGPT's) with weights_only=True and strip torch.compile's prefix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    checkpoint = _load(path, device)
    missing = [k for k in ("model", "model_args") if k not in checkpoint]
    if missing:
        raise CheckpointError(f"{path} is not a GPT checkpoint: it lacks {', '.join(missing)}")
    missing = [k for k in MODEL_ARG_KEYS if k != "dropout" and k not in checkpoint["model_args"]]
    if missing:
        raise CheckpointError(f"{path} is not a GPT checkpoint this trainer can build: its model_args lack "
                              f"{', '.join(missing)}")
    # nanoGPT under torch < 2 stored each block's causal mask as `attn.bias`; SDPA needs none
    checkpoint["model"] = {
        k.removeprefix(COMPILE_PREFIX): v for k, v in checkpoint["model"].items()
        if not k.endswith(".attn.bias")
    }
    return checkpoint


RESUME_KEYS = ("optimizer", "iter_num", "best_val_loss")  # what init_from=resume reads besides the model


def optimizer_name_of(checkpoint: dict) -> str:
    """The optimizer a checkpoint was trained with (nanoGPT's record none: they are AdamW)."""
    optim = checkpoint.get("config", {}).get("optim")
    return optim.get("name", "adamw") if isinstance(optim, dict) else "adamw"


def check_resumable(checkpoint: dict, path: Path, optim_name: str) -> None:
    """CheckpointError unless `checkpoint` holds a run that `optim=optim_name` can continue."""
    missing = [k for k in RESUME_KEYS if k not in checkpoint]
    if missing:
        raise CheckpointError(f"{path} holds weights but not a run to resume (it lacks {', '.join(missing)}); "
                              f"load it with trainer.load_model, or move it away and use init_from=scratch")
    trained_with = optimizer_name_of(checkpoint)
    if trained_with != optim_name:
        raise CheckpointError(f"{path} was trained with optim={trained_with}, which optim={optim_name} cannot "
                              f"continue; resume with optim={trained_with}, or use init_from=scratch")


def model_from_checkpoint(checkpoint: dict, path: Path = Path("ckpt.pt")) -> GPT:
    args = {k: checkpoint["model_args"].get(k, 0.0) for k in MODEL_ARG_KEYS}  # dropout: not stored by all
    model = GPT(GPTConfig(**args))
    try:
        model.load_state_dict(checkpoint["model"])
    except (RuntimeError, KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: its weights do not fit its model_args ({_first_line(e)})") from None
    return model


def load_model(path, device: str = "cpu") -> GPT:
    """The GPT stored in a checkpoint (ours or nanoGPT's), on `device`, in eval mode."""
    model = model_from_checkpoint(load_checkpoint(path, device), Path(path))
    return model.to(device).eval()


def checkpoint_config(path) -> dict:
    """The training config a checkpoint of ours records (empty for nanoGPT's), read without
    loading the weights into memory."""
    return _load(Path(path), "cpu", mmap=True).get("config", {})


def checkpoint_iter(path) -> int:
    """The iteration a checkpoint was written at (nanoGPT's `iter_num`), read without loading
    the weights into memory; 0 when it records none."""
    return int(_load(Path(path), "cpu", mmap=True).get("iter_num", 0))
