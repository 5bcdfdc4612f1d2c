"""The studies' artifact store: files a trial (or a study's report) attaches for optuna-dashboard.

Each trial uploads, at its end whatever its state, its resolved config (``config.yaml``), its
``metrics.jsonl`` and its curve (``curve.png``: val and train loss against training tokens), all
written into its run dir first. Optuna keeps each artifact's metadata (file name, MIME type) in
the study's storage and the bytes in the store, under a UUID.

One store, ``outputs/artifacts/``, serves every study run from this folder: optuna-dashboard
takes a single ``--artifact-dir`` for all the studies of a storage it lists, so a store per
study would leave every other study's artifacts unreadable in it; the UUIDs never collide.
An upload that fails (a full disk, a store that is not a folder) warns in one line and the trial
goes on: artifacts are for reading, never what a trial's value depends on. (Optuna records an
artifact's name in the storage before it writes the bytes, so the dashboard may then list a name
it cannot open; the store itself never holds a partial file.)

Workers on several machines sharing a PostgreSQL study each write to their own
``outputs/artifacts/``; the dashboard opens the artifacts of the machine it runs on (point
``outputs/artifacts`` at a shared folder to see them all).
"""

from __future__ import annotations

import os
import tempfile
import textwrap
from pathlib import Path
from typing import BinaryIO, Dict, Iterable, Optional, Union

import optuna
from optuna.artifacts import FileSystemArtifactStore, upload_artifact

from sweeps import trial_record
from trainer import METRICS_NAME, logged_records

ARTIFACT_DIR = Path("outputs") / "artifacts"  # relative to the cwd, as outputs/studies/ is
CONFIG_FILE = "config.yaml"
METRICS_FILE = METRICS_NAME
CURVE_FILE = "curve.png"
# The MIME type each file is stored with (Python guesses none for .yaml or .jsonl); the dashboard
# shows images, and a .jsonl (by its name) as a table.
MIMETYPES = {".yaml": "application/yaml", ".jsonl": "application/jsonl", ".png": "image/png", ".md": "text/markdown"}


class AtomicFileSystemArtifactStore(FileSystemArtifactStore):
    """Optuna's file-system store, but each artifact is written to a temp file in the store and
    renamed into place: a crash mid-write leaves no truncated artifact behind."""

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        target = self._get_filepath(artifact_id)  # Optuna's check that the id stays in the store
        fd, tmp = tempfile.mkstemp(prefix=f".{artifact_id}.", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                while chunk := content_body.read(1 << 20):
                    f.write(chunk)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def open_artifact_store(directory: Union[str, Path] = ARTIFACT_DIR) -> AtomicFileSystemArtifactStore:
    """The artifact store at `directory` (created when missing); serve it with
    ``optuna-dashboard STORAGE_URL --artifact-dir DIRECTORY``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return AtomicFileSystemArtifactStore(directory)


def upload(store: FileSystemArtifactStore, study_or_trial: Union[optuna.Trial, optuna.Study],
           path: Union[str, Path]) -> Optional[str]:
    """Upload the file `path` as an artifact of the trial or study; its artifact id, or None
    (with a one-line warning) when it could not be uploaded."""
    path = Path(path)
    try:
        return upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=study_or_trial,
                               mimetype=MIMETYPES.get(path.suffix))
    except Exception as e:  # noqa: BLE001 - an artifact never fails the trial or the report
        owner = f"trial {study_or_trial.number}" if isinstance(study_or_trial, optuna.Trial) else \
            f"study {study_or_trial.study_name!r}"
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        print(f"WARNING: {owner}: artifact {path.name} not uploaded: {type(e).__name__}: {first_line}")
        return None


def read_metrics(path: Union[str, Path]) -> list[dict]:
    """The records of a run's metrics.jsonl; a line cut short (the last one of a run killed
    mid-write) is left out, with a warning."""
    records, bad = logged_records(Path(path))
    if bad:
        print(f"WARNING: {path}: {bad} unreadable line(s) left out")
    return records


def plot_curve(records: Iterable[dict], path: Union[str, Path], title: str,
               decayed: Optional[Dict[int, float]] = None) -> Optional[Path]:
    """Draw a run's losses against training tokens into the PNG `path`: val loss and train loss at
    each evaluation, the per-iteration train loss faint behind them, the best val loss marked.
    The x axis is logarithmic past the first evaluation after the start and linear before it
    (symlog), so the loss at 0 tokens, where a diverging run leaves from, is drawn too; the y
    axis turns logarithmic when the losses span more than a factor of 3 (a diverged run).
    `decayed` (a cooldown trial's {horizon tokens: decayed val loss}) is drawn over the stable
    phase's curve as the points the trial was judged by.
    Returns `path`, or None when the records hold no evaluation (nothing to draw)."""
    from matplotlib.figure import Figure  # no pyplot: draws with Agg, whatever backend a notebook chose

    records = list(records)
    evals = [r for r in records if r.get("type") == "eval"]
    iters = [r for r in records if r.get("type") == "train"]
    if not evals:
        return None
    fig = Figure(figsize=(8, 5), dpi=100)
    ax = fig.add_subplot()
    if iters:
        ax.plot([r["tokens"] for r in iters], [r["loss"] for r in iters], color="tab:orange", alpha=0.3,
                linewidth=1, label="train loss (per logged iteration)")
    tokens = [r["tokens"] for r in evals]
    ax.plot(tokens, [r["train_loss"] for r in evals], "--o", color="tab:orange", markersize=3,
            label="train loss (at evaluations)")
    val = [r["val_loss"] for r in evals]
    ax.plot(tokens, val, "-o", color="tab:blue", markersize=4, label="val loss")
    best = min(range(len(val)), key=val.__getitem__)
    ax.plot([tokens[best]], [val[best]], "*", color="tab:red", markersize=14,
            label=f"best val loss {val[best]:.4f} at {tokens[best]:,} tokens")
    if decayed:
        steps = sorted(decayed)
        ax.plot(steps, [decayed[t] for t in steps], "-s", color="tab:green", markersize=6,
                label="decayed val loss at each rung (cooldown branch; the values reported)")
        tokens_drawn = tokens + steps
    else:
        tokens_drawn = tokens
    positive = [t for t in tokens_drawn + [r["tokens"] for r in iters] if t > 0]
    ax.set_xscale("symlog", linthresh=min(positive) if positive else 1, linscale=0.3)
    ax.set_xlabel("training tokens seen (log scale; linear up to the first evaluation)")
    losses = [x for r in evals for x in (r["val_loss"], r["train_loss"])] + [r["loss"] for r in iters]
    finite = [x for x in losses if x == x and abs(x) != float("inf") and x > 0]
    if finite and max(finite) > 3 * min(finite):
        ax.set_yscale("log")
    ax.set_ylabel("cross-entropy loss (nats per token)")
    ax.set_title("\n".join(textwrap.wrap(title, 90)), fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
    return path


def upload_trial_files(store: FileSystemArtifactStore, trial: optuna.Trial, run_dir: Union[str, Path],
                       config_yaml: str, outcome: str) -> list[str]:
    """Write the trial's config and curve into its run dir and upload them with its
    metrics.jsonl; `outcome` (how it ended) goes into the curve's title. Returns the artifact ids
    uploaded. A file that cannot be written or uploaded warns in one line and is skipped."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():  # the trial failed before its run began: nothing to attach
        return []
    files: list[Path] = []
    try:
        config = run_dir / CONFIG_FILE
        tmp = config.with_name(f".{CONFIG_FILE}.tmp")
        tmp.write_text(f"# trial {trial.number} of study {trial.study.study_name!r}: its resolved training "
                       f"config\n" + config_yaml)
        os.replace(tmp, config)
        files.append(config)
    except OSError as e:
        print(f"WARNING: trial {trial.number}: {CONFIG_FILE} not written: {e}")
    metrics = run_dir / METRICS_FILE
    if metrics.is_file():
        files.append(metrics)
        try:
            title = f"study {trial.study.study_name!r}, trial {trial.number}: {outcome}"
            curve = plot_curve(read_metrics(metrics), run_dir / CURVE_FILE, title, trial_record.rung_val_loss(trial))
            if curve is not None:
                files.append(curve)
        except Exception as e:  # noqa: BLE001 - a plot never fails the trial
            print(f"WARNING: trial {trial.number}: {CURVE_FILE} not drawn: {type(e).__name__}: {e}")
    return [artifact_id for artifact_id in (upload(store, trial, f) for f in files) if artifact_id]
