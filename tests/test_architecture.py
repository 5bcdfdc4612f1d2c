"""Rules of the layout, enforced: study_runner.py -> sweeps -> trainer, never the other way."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(package: str) -> set[str]:
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


def test_importing_trainer_loads_no_optuna_and_no_sweeps():
    code = "import sys, trainer, trainer.train, trainer.data; print(sorted(m for m in sys.modules if m.split('.')[0] in ('optuna', 'sweeps')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_trainer_source_never_imports_optuna_or_sweeps():
    assert not imported_modules("trainer") & {"optuna", "sweeps", "study_runner"}


def test_sweeps_never_import_the_entry_point():
    assert "study_runner" not in imported_modules("sweeps")
