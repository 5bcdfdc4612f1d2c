"""Export a study's val-loss curves in the format bench/pruner_replay.py replays.

    python study_runner.py +sweep=lr_warmup_grid            # a grid with no pruning
    python bench/record_curves.py --study lr_warmup_grid --out bench/results/curves.json
    python bench/pruner_replay.py bench/results/curves.json

Only trials that ran their whole budget count (COMPLETE, stop reason "completed its budget"):
the replay needs each trial's full curve.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import optuna
from optuna.trial import TrialState

from sweeps import trial_record
from sweeps.storage import open_storage
from trainer.config import ScheduleConfig
from trainer.schedule import lr_sum


def lr_areas(t: optuna.trial.FrozenTrial, steps: list) -> tuple[list, float]:
    """The trial's LR sums at its steps and over its budget, as the objective records them;
    recomputed from its config for trials recorded before the objective did."""
    area = trial_record.lr_area(t)
    if area:
        return [area[s] for s in steps], trial_record.lr_area_budget(t)
    schedule = ScheduleConfig(**json.loads(trial_record.config_json(t))["schedule"])
    per_iter = trial_record.budget_step(t) // schedule.max_iters
    return ([lr_sum(schedule, 0, s // per_iter) * per_iter for s in steps],
            lr_sum(schedule, 0, schedule.max_iters) * per_iter)


def curves_of(study: optuna.Study) -> dict:
    trials = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        steps = sorted(t.intermediate_values)
        budget = trial_record.budget_step(t)
        if trial_record.status(t) != "completed" or not steps or steps[-1] < budget:
            continue
        se = trial_record.val_loss_se(t)
        area, area_budget = lr_areas(t, steps)
        batches = {}
        names = trial_record.val_batches(t)
        if names is not None:  # recorded since the objective pairs evaluations by batch
            per_step = trial_record.val_batch_losses(t)
            batches = {"batch_losses": [per_step[s] for s in steps], "val_batches": names}
        trials.append({"number": t.number, "params": t.params, "steps": steps,
                       "values": [t.intermediate_values[s] for s in steps],
                       "se": [se.get(s, 0.0) for s in steps],
                       "warmup_step": trial_record.warmup_step(t), "budget_step": budget,
                       "lr_area": area, "lr_area_budget": area_budget, **batches})
    if not trials:
        raise SystemExit(f"study {study.study_name!r} has no trial that ran its whole budget")
    return {"meta": {"study": study.study_name, "trials": len(trials)}, "trials": trials}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--storage", default="sqlite:///outputs/optuna.db")
    ap.add_argument("--study", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    study = optuna.load_study(study_name=args.study, storage=open_storage(args.storage, create=False))
    data = curves_of(study)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(data, indent=1))
    print(f"{len(data['trials'])} curves -> {args.out}")


if __name__ == "__main__":
    main()
