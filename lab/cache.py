"""Where artefacts live and how they are published: one folder, one way to write into it.

Every artefact (base models, data folders, runs, the continual lab's pieces) lives under one cache folder:
`.cache` at the repository root, or `BHRA_CACHE` (read once, when lab is imported), or the `cache` of a
RunConfig. An artefact is keyed by `stable_hash` of everything it depends on, and appears only when
complete: it is built in a temporary sibling folder and moved into place (`building`), so a killed build
leaves no half-written artefact that a later run would take for finished.

One writer at a time (`lock`): a process that builds an artefact or trains a run holds an exclusive
`fcntl` lock on a `<name>.lock` file beside it; a second one waits for it, saying whose pid it waits for. An
`fcntl` lock is the kernel's: it ends with its process, however that process dies, so no stale lock is left to
clear by hand (a lock *file* that a dead process left behind would be). The temporary folders of builders that
died are removed by the next builder of the same artefact.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager, nullcontext
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
def lock(target: Path, log=None):
    """Hold the exclusive lock of `target` (a run or artefact folder, which need not exist yet) for the block.
    If another process holds it, wait for it, telling `log` (default: stderr) which pid holds it. Re-entrant
    within a process: a block inside another block of the same target does not wait for itself."""
    path = target.with_name(target.name + ".lock")
    if path in _HELD:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            print(f"waiting for pid {holder}, which holds {path} (it trains or builds {target.name})",
                  file=log or sys.stderr, flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        _HELD.add(path)
        try:
            yield
        finally:
            _HELD.discard(path)
            fcntl.flock(f, fcntl.LOCK_UN)


_HELD: set = set()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _remove_dead_builds(final: Path) -> None:
    """Delete the temporary folders `building` left beside `final` when their process died."""
    for tmp in final.parent.glob(f".{final.name}-*-*"):
        pid = tmp.name[len(final.name) + 2:].split("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def building(final: Path, replace: bool = False):
    """Yield an empty temporary folder beside `final`; when the block ends without error, move it to
    `final`. On an error the temporary folder is deleted and `final` is left as it was. `replace=False`:
    one builder at a time holds `final`'s lock (a second waits), and if `final` appeared meanwhile, that one
    is kept. `replace=True` publishes anew, for a caller that holds the lock of what encloses `final` (a run
    folder's). The temporary folder is named after this process, so that a later builder can tell a dead one's."""
    with lock(final) if not replace else nullcontext():
        final.parent.mkdir(parents=True, exist_ok=True)
        _remove_dead_builds(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-{os.getpid()}-", dir=final.parent))
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


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in chunks; remembered per (path, size, mtime) within a process."""
    st = Path(path).stat()
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


_DIGESTS: dict = {}


def read_json(path: Path, fix: str):
    """A JSON file this harness wrote; a damaged one raises ValueError naming the file and `fix`."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is damaged ({e}): {fix}") from None


def write_json(path: Path, obj) -> None:
    """Write JSON atomically: a killed write leaves the old file (or none), never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)
