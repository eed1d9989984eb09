"""Where artefacts live and how they are published: one folder, one way to write into it.

Every artefact (base models, data folders, runs, the continual lab's pieces) lives under one cache folder:
`.cache` at the repository root, or `BHRA_CACHE` (read once, when lab is imported), or the `cache` of a
RunConfig. An artefact is keyed by `stable_hash` of everything it depends on, and appears only when
complete: it is built in a temporary sibling folder and moved into place (`building`), so a killed build
leaves no half-written artefact that a later run would take for finished.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT = os.environ.get("BHRA_CACHE", ".cache")  # gitignored


def resolve(path) -> Path:
    """The path rule: absolute paths as given, relative ones from the repository root."""
    p = Path(os.path.expanduser(str(path)))
    return p if p.is_absolute() else REPO / p


def root(cache=None) -> Path:
    """The cache folder: `cache` if given (the path rule), else BHRA_CACHE, else `.cache`."""
    return resolve(cache if cache is not None else DEFAULT)


def stable_hash(obj) -> str:
    """A short, stable hash of a JSON-able object (cache keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


@contextmanager
def building(final: Path, replace: bool = False):
    """Yield an empty temporary folder beside `final`; when the block ends without error, move it to
    `final`. `replace=False`: if `final` appeared meanwhile (another process built the same artefact),
    keep that one. On an error the temporary folder is deleted and `final` is left as it was."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if replace and final.exists():
        old = final.with_name(f"{tmp.name}.old")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
        return
    try:
        os.replace(tmp, final) if not final.exists() else shutil.rmtree(tmp)
    except OSError:  # final appeared between the check and the rename
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: Path, obj) -> None:
    """Write JSON atomically: a killed write leaves the old file (or none), never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)
