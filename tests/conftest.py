import os
from pathlib import Path

# tiktoken cannot download on the CI machines: the GPT-2 ranks lie in shared/ beside the repo
os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "tiktoken_cache"))
