"""`python -m trainer [group=option] [key=value ...]`: one training run from conf/train.yaml."""

import sys

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from trainer.config import ConfigError, TrainConfig
from trainer.data import DataError
from trainer.train import train


def register_configs() -> None:
    """The schema of conf/train.yaml (`train_schema` in its defaults list)."""
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    try:
        result = train(cfg)
    except (ConfigError, DataError) as e:
        sys.exit(f"error: {e}")
    print(f"{result.status}: best val loss {result.best_val_loss:.4f} at iteration {result.best_iter}, "
          f"{result.tokens_seen:,} tokens ({result.epochs:.2f} epochs) in {result.wall_time_s:.0f}s; "
          f"run dir {result.out_dir}")
    if result.status == "diverged":
        sys.exit(1)


if __name__ == "__main__":
    register_configs()
    main()
