"""Optuna sweeps over the Hydra configs: `python study_runner.py +sweep=lr_warmup [overrides]`.

mode=sweep (default) creates or resumes the study; mode=best re-runs its best trial as a long run;
mode=report writes the report folder of a stored study (outputs/studies/NAME/report/);
mode=plan prints what the study will cost (tokens, FLOPs, hours, memory) without training.
"""

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from omegaconf.errors import InterpolationResolutionError

from sweeps.config import StudyError, register_configs
from sweeps.runner import run
from sweeps.search_space import SearchSpaceError
from sweeps.storage import StorageError, scrub_password_from_files
from trainer import ConfigError, DataError, Interrupted

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="study_runner")
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    try:
        storage = str(cfg.study.storage)  # resolves ${oc.env:...}
    except InterpolationResolutionError as e:
        sys.exit(f"error: study.storage cannot be resolved: {e}".splitlines()[0])
    if hydra_cfg.output_subdir is not None:  # Hydra saved the config, URL and all, before this call
        saved = Path(hydra_cfg.runtime.output_dir) / hydra_cfg.output_subdir
        scrub_password_from_files([saved / f for f in ("config.yaml", "hydra.yaml", "overrides.yaml")], storage)
    try:
        run(cfg, list(hydra_cfg.overrides.task))
    except (StudyError, SearchSpaceError, StorageError, ConfigError, DataError) as e:
        sys.exit(f"error: {e}")
    except Interrupted as e:  # the study said how to resume it
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
