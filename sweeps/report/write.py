"""Writing a study's report folder, whole or not at all, and `mode=report`."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import List, Optional

import optuna
from omegaconf import DictConfig
from optuna.artifacts import get_all_artifact_meta
from optuna.trial import TrialState
from optuna_dashboard import save_note

from sweeps.artifacts import open_artifact_store, upload
from sweeps.compose import load_stored_study, study_dir_of
from sweeps.config import StudyError
from sweeps.report.facts import facts_of
from sweeps.report.markdown import SECTIONS, SectionBuilder, build_sections, note, render
from sweeps.report.table import study_report

REPORT_DIR = "report"
REPORT_FILE = "report.md"


def _swap_in(tmp: Path, folder: Path) -> None:
    """Puts the finished folder ``tmp`` at ``folder``, replacing an older report. Between the two
    renames no report is there, but never half of one; when another worker's report took the place
    meanwhile, that one (as complete) stays."""
    for stale in folder.parent.glob(f".{folder.name}.old-*"):  # a swap cut short by a crash
        shutil.rmtree(stale, ignore_errors=True)
    old: Optional[Path] = folder.with_name(f".{folder.name}.old-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(folder, old)
    except FileNotFoundError:
        old = None
    try:
        os.rename(tmp, folder)
    except OSError:
        if not folder.is_dir():  # not another worker's report: put the previous one back
            if old is not None:
                os.rename(old, folder)
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # another worker's report, written since, stays
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _attach_report(study: optuna.Study, folder: Path, store) -> None:
    """Upload report.md and its PNGs as the study's artifacts, each unless the study already holds
    a file of that name with the same bytes (a report written again after no new trial)."""
    held: dict = {}
    for meta in get_all_artifact_meta(study):
        held.setdefault(meta.filename, []).append(meta.artifact_id)
    for path in sorted(folder.iterdir()):
        if path.name != REPORT_FILE and path.suffix != ".png":
            continue
        data = path.read_bytes()
        same = False
        for artifact_id in held.get(path.name, []):
            try:
                with store.open_reader(artifact_id) as reader:
                    same = reader.read() == data
            except Exception:  # noqa: BLE001 - an unreadable old copy: upload this one
                same = False
            if same:
                break
        if not same:
            upload(store, study, path)


def write_report(study: optuna.Study, folder: Path, builders: List[SectionBuilder] = SECTIONS,
                 artifact_store=None, long_run_iters: Optional[int] = None) -> Path:
    """Writes ``folder``/report.md and its PNGs for ``study`` (built in a temporary folder beside
    it, then renamed into place), saves the summary as the study's note for optuna-dashboard,
    uploads the files as the study's artifacts when given an `artifact_store`, and returns the
    path of report.md. `long_run_iters`: the long run a cooldown study's rungs predict."""
    folder = Path(folder)
    facts = facts_of(study, long_run_iters=long_run_iters)
    sections = build_sections(facts, builders)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    tmp.chmod(0o755)  # mkdtemp's folder is private; a report is for anyone who may read the study
    try:
        for section in sections:
            for name, figure, _ in section.figures:
                figure.savefig(tmp / name)
        (tmp / REPORT_FILE).write_text(render(facts, sections))
        _swap_in(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    save_note(study, note(facts, str(folder / REPORT_FILE)))
    if artifact_store is not None:
        _attach_report(study, folder, artifact_store)
    return folder / REPORT_FILE


def report_at_end_of_sweep(study: optuna.Study, study_dir: Path, long_run_iters: Optional[int] = None) -> Optional[Path]:
    """The sweep's closing report: written when the study holds a complete trial, else one line why."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        print(f"no report: study {study.study_name!r} holds no complete trial")
        return None
    path = write_report(study, Path(study_dir) / REPORT_DIR, artifact_store=open_artifact_store(),
                        long_run_iters=long_run_iters)
    print(f"report: {path}")
    return path


def run_report(cfg: DictConfig, overrides: list[str]) -> Path:
    """`mode=report`: the report of a stored study (named by study.name, or the sweep's name),
    opened without creating anything; StudyError when it holds no complete trial."""
    if not cfg.study.name and cfg.sweep is None:
        raise StudyError("mode=report needs the study: add study.name=NAME (or +sweep=NAME for the sweep's study)")
    study = load_stored_study(cfg)
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        counts = {s.name: len(study.get_trials(deepcopy=False, states=(s,))) for s in TrialState}
        held = ", ".join(f"{c} {n}" for n, c in counts.items() if c) or "no trials"
        raise StudyError(f"study {study.study_name!r} has no complete trial to report ({held}); "
                         f"run mode=sweep first, or wait for a trial to finish")
    print(study_report(study))
    path = write_report(study, study_dir_of(cfg) / REPORT_DIR, artifact_store=open_artifact_store(),
                        long_run_iters=cfg.plan.long_run_iters)
    print(f"report: {path}")
    return path
