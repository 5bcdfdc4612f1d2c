import os
from pathlib import Path

import pytest

# tiktoken cannot download on the CI machines: the GPT-2 ranks lie in shared/ beside the repo
os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "tiktoken_cache"))


@pytest.fixture
def workdir(tmp_path, monkeypatch, tmp_path_factory):
    """Runs from tmp_path (outputs/ goes there) and shares one tokenized sample corpus."""
    monkeypatch.chdir(tmp_path)
    cache = tmp_path_factory.getbasetemp() / "data_cache"
    return tmp_path, [f"data.cache_dir={cache}"]


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory):
    """A real 4-trial study of tiny GPTs made by the runner, shared by the tests that only read it
    (the dashboard, the notebook): (its folder, its storage URL, its name). Read it, never write."""
    import subprocess
    import sys

    from tests.test_study_runner import ROOT, TINY

    cwd = tmp_path_factory.mktemp("tiny_study")
    url = f"sqlite:///{cwd / 'study.db'}"
    cache = tmp_path_factory.getbasetemp() / "data_cache"
    proc = subprocess.run([sys.executable, str(ROOT / "study_runner.py"), "+sweep=lr_warmup", *TINY,
                           f"study.storage={url}", "study.n_trials=4", f"data.cache_dir={cache}"],
                          cwd=cwd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return cwd, url, "lr_warmup"
