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
