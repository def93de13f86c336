"""Atomic writes: a reader (another stage, a server hot-swapping an index) never sees half a file or dir.

Every writer stages into a hidden sibling in the same directory and renames it into place, because a
rename within one file system is atomic and a crash then leaves only a `.name.tmp-*` sibling behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

# Fixed writer options: the same table always gives the same bytes (no timestamps are written).
PARQUET_OPTIONS = dict(compression="zstd", compression_level=3, use_dictionary=True, write_statistics=True)


def _tmp_sibling(path: Path) -> Path:
    # pid + a random suffix: two writers of the same path (two Ray workers) never share a temp file.
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent)
    os.close(fd)
    return Path(name)


def replace_file(path: str | Path, write: Callable[[Path], None], durable: bool = False) -> Path:
    """Call `write(tmp)` on a hidden sibling of `path`, then rename it onto `path`; on error remove it.

    `durable`: fsync the data before the rename makes it visible, for files whose loss costs money
    (committed teacher labels); a power cut then leaves the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    try:
        write(tmp)
        if durable:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; artifacts are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | Path, text: str, durable: bool = False) -> Path:
    return replace_file(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), durable)


def write_json(path: str | Path, obj) -> Path:
    """Sorted keys, no ASCII escaping, trailing newline: the same object always gives the same bytes."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def write_parquet(path: str | Path, table: pa.Table, durable: bool = False, **options) -> Path:
    """Write `table` with the fixed PARQUET_OPTIONS (overridable), atomically."""
    opts = {**PARQUET_OPTIONS, **options}
    return replace_file(path, lambda tmp: pq.write_table(table, str(tmp), **opts), durable)


def set_pointer(path: str | Path, target: str) -> Path:
    """A one-line pointer file (e.g. an index root's CURRENT) naming `target`, swapped atomically."""
    return write_text(path, target + "\n")


def replace_dir(staged: str | Path, dst: str | Path) -> None:
    """Move the finished directory `staged` onto `dst`; an existing `dst` is swapped out, then deleted."""
    staged, dst = Path(staged), Path(dst)
    if not dst.exists():
        os.rename(staged, dst)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-", dir=dst.parent))
    os.rmdir(old)  # only the unique name is wanted: rename() needs the target to be absent
    os.rename(dst, old)
    os.rename(staged, dst)
    if old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink()


@contextlib.contextmanager
def atomic_dir(out_dir: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `out_dir`; on success rename it to `out_dir`, on error delete it."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise FileExistsError(f"{out} already exists and is not empty (pass overwrite=True / --overwrite)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    os.chmod(tmp, 0o755)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, out)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dir_content_hash(directory: str | Path) -> str:
    """sha256 over a directory's files (a saved student: manifest and weights), names included, in name order.

    What binds an index version or a cached embedding to the exact model: created_at and the spec alone
    would not notice weights replaced in place (a retrain into the same directory)."""
    digest = hashlib.sha256()
    for f in sorted(p for p in Path(directory).iterdir() if p.is_file() and not p.name.startswith(".")):
        digest.update(f"{f.name}\0{file_sha256(f)}\n".encode())
    return digest.hexdigest()
