"""Optuna sweeps over the Hydra configs: `python study_runner.py +sweep=lr_warmup [overrides]`.

mode=sweep (default) creates or resumes the study; mode=best re-runs its best trial as a long run.
"""

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from sweeps.config import StudyError, register_configs
from sweeps.runner import run
from sweeps.search_space import SearchSpaceError
from sweeps.storage import StorageError
from trainer import ConfigError, DataError

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="study_runner")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg, list(HydraConfig.get().overrides.task))
    except (StudyError, SearchSpaceError, StorageError, ConfigError, DataError) as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
