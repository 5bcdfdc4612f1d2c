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


# -- one module names the data a trial records ---------------------------------------------------

RECORD_MODULE = ROOT / "sweeps" / "trial_record.py"
ATTR_SOURCES = [*sorted((ROOT / "sweeps").rglob("*.py")), *sorted((ROOT / "bench").glob("*.py")),
                ROOT / "study_runner.py"]
ATTR_NAMES = {"attrs", "user_attrs"}  # names that hold a user_attrs mapping by convention


def user_attr_key_literals(source: str) -> list[tuple[int, str]]:
    """(line, key) of each string constant `source` uses as a user-attr key: the first argument
    of `set_user_attr`; a subscript, `.get` / `.pop` / `.setdefault` or `in` test on
    `<x>.user_attrs`, or on a name bound to one (or called `attrs` / `user_attrs`); a key of a
    `user_attrs={...}` argument."""
    tree = ast.parse(source)
    names = set(ATTR_NAMES)
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Attribute) and node.value.attr == "user_attrs":
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))

    def is_user_attrs(node: ast.AST) -> bool:
        return ((isinstance(node, ast.Attribute) and node.attr == "user_attrs")
                or (isinstance(node, ast.Name) and node.id in names))

    keys: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and node.args and (
                    func.attr == "set_user_attr"
                    or (func.attr in ("get", "pop", "setdefault") and is_user_attrs(func.value))):
                keys.append(node.args[0])
            keys.extend(k for kw in node.keywords if kw.arg == "user_attrs" and isinstance(kw.value, ast.Dict)
                        for k in kw.value.keys if k is not None)
        elif isinstance(node, ast.Subscript) and is_user_attrs(node.value):
            keys.append(node.slice)
        elif isinstance(node, ast.Compare) and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops) \
                and any(is_user_attrs(c) for c in node.comparators):
            keys.append(node.left)
    return sorted((k.lineno, k.value) for k in keys if isinstance(k, ast.Constant) and isinstance(k.value, str))


def test_the_key_scan_finds_every_form_of_a_literal_key():
    source = '\n'.join([
        't.set_user_attr("a", 1)',
        'x = t.user_attrs["b"]',
        'y = t.user_attrs.get("c", 0)',
        'if "d" in t.user_attrs: pass',
        'attrs = other.user_attrs',
        'z = attrs.get("e")',
        'create_trial(user_attrs={"f": 1})',
        'w = f"{t.user_attrs.get(\'g\')}"',
        'ok = t.user_attrs.get(KEY), cfg["config"], t.set_user_attr(KEY, 1), t.system_attrs["grid_id"]',
    ])
    assert user_attr_key_literals(source) == [(1, "a"), (2, "b"), (3, "c"), (4, "d"), (6, "e"), (7, "f"),
                                              (8, "g")]


def test_no_user_attr_key_is_spelled_outside_trial_record():
    assert RECORD_MODULE.is_file() and RECORD_MODULE in ATTR_SOURCES
    found = {f"{path.relative_to(ROOT)}:{line}": key
             for path in ATTR_SOURCES if path != RECORD_MODULE
             for line, key in user_attr_key_literals(path.read_text())}
    assert found == {}, f"user-attr keys spelled outside sweeps/trial_record.py: {found}"
