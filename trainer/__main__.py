"""`python -m trainer [group=option] [key=value ...]`: one training run from conf/train.yaml."""

import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from trainer.config import ConfigError, TrainConfig
from trainer.data import DataError
from trainer.distributed import is_main_process
from trainer.interrupt import Interrupted, signals_interrupt
from trainer.train import CHECKPOINT_NAME, make_writable_dir, train


def _writable_dir(path: str) -> str:
    """`path`, created; Hydra makes its run dir (the run's out_dir) before the trainer starts, so an
    out_dir that cannot be made is reported here in one line rather than by Hydra's traceback."""
    try:
        make_writable_dir(Path(path))
    except ConfigError as e:
        sys.exit(f"error: {e}")
    return path


def drop_rank_dir(own_dir: Path, run_dir: Path) -> bool:
    """Under torchrun every rank resolves its own `out_dir`, and a later rank may read `${now:...}` a
    second after rank 0: Hydra then made that rank a folder of its own, while the run is in rank 0's.
    That folder goes when it holds nothing but Hydra's files (`.hydra/`, empty logs); True if it went."""
    if not own_dir.is_dir() or own_dir.resolve() == run_dir.resolve():
        return False
    entries = list(own_dir.iterdir())
    if not all(e.name == ".hydra" or (e.suffix == ".log" and e.is_file() and e.stat().st_size == 0) for e in entries):
        return False
    shutil.rmtree(own_dir, ignore_errors=True)
    return True


def register_configs() -> None:
    """The schema of conf/train.yaml (`train_schema` in its defaults list) and its resolver."""
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)
    OmegaConf.register_new_resolver("writable_dir", _writable_dir, replace=True)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    out_dir = str(cfg.out_dir)
    try:
        with signals_interrupt():
            result = train(cfg)
    except (ConfigError, DataError) as e:
        sys.exit(f"error: {e}")
    except Interrupted as e:
        ckpt = Path(out_dir) / CHECKPOINT_NAME
        if is_main_process():
            print(f"\ninterrupted ({e}): " + (
                f"{ckpt} holds the last checkpoint written, intact; continue with the same command plus "
                f"init_from=resume out_dir={out_dir}" if ckpt.is_file() else "no checkpoint was written yet"),
                file=sys.stderr)
        sys.exit(e.exit_code)
    if not is_main_process():  # under torchrun rank 0 speaks for all
        if Path(HydraConfig.get().runtime.output_dir).resolve() == Path(out_dir).resolve():
            drop_rank_dir(Path(out_dir), Path(result.out_dir))
        sys.exit(1 if result.status == "diverged" else 0)
    print(f"{result.status}: best val loss {result.best_val_loss:.4f} at iteration {result.best_iter}, "
          f"{result.tokens_seen:,} tokens ({result.epochs:.2f} epochs) in {result.wall_time_s:.0f}s; "
          f"run dir {result.out_dir}")
    if result.status == "diverged":
        sys.exit(1)


if __name__ == "__main__":
    register_configs()
    main()
