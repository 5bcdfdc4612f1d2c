"""Rules of the layout, enforced: study_runner.py -> sweeps -> trainer, never the other way; the
trainer is a library without Optuna or Hydra; sweeps use only what `trainer` exports."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sources(package: str):
    for path in sorted((ROOT / package).rglob("*.py")):
        yield path, ast.parse(path.read_text())


def imported_modules(package: str) -> set[str]:
    found = set()
    for _, tree in sources(package):
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


def test_importing_trainer_loads_no_optuna_no_hydra_and_no_sweeps():
    code = ("import sys, trainer, trainer.train, trainer.data; from trainer import load_model, train; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'optuna', 'hydra', 'sweeps'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_trainer_source_imports_hydra_only_in_its_cli():
    assert not imported_modules("trainer") & {"optuna", "sweeps", "study_runner"}
    for path, tree in sources("trainer"):
        if path.name == "__main__.py":
            continue
        hydra = [n.lineno for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                 and any(name.split(".")[0] == "hydra" for name in
                         ([a.name for a in n.names] if isinstance(n, ast.Import) else [n.module or ""]))]
        assert not hydra, f"{path.relative_to(ROOT)} imports hydra at lines {hydra}"


def test_sweeps_never_import_the_entry_point():
    assert "study_runner" not in imported_modules("sweeps")


def test_sweeps_use_only_what_trainer_exports():
    import trainer

    exported = set(trainer.__all__)
    assert all(hasattr(trainer, name) for name in exported)
    wrong = []
    for path, tree in sources("sweeps"):
        for node in ast.walk(tree):
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Import):
                wrong += [f"{where} import {a.name}" for a in node.names if a.name.startswith("trainer.")]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module.startswith("trainer."):
                    wrong.append(f"{where} from {node.module} import ...")
                elif node.module == "trainer":
                    wrong += [f"{where} {a.name} (not in trainer.__all__)" for a in node.names
                              if a.name not in exported]
    assert not wrong, wrong


def test_every_schedule_name_has_a_schedule():
    from trainer.config import SCHEDULE_NAMES
    from trainer.schedule import AFTER_WARMUP

    assert set(AFTER_WARMUP) == set(SCHEDULE_NAMES)


def test_every_mode_has_a_runner():
    from sweeps.config import MODES
    from sweeps.runner import RUN_MODE

    assert set(RUN_MODE) == set(MODES)
