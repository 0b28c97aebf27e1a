"""Atomic file and folder writes: nothing already written is lost or half-written."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from efficientvis_trt.errors import EvisError


def _umask() -> int:
    """The process umask, read without changing it (os.umask would, for every thread, for a moment)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def fsync_path(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to disk; best effort where the OS refuses."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def file_mode() -> int:
    """The mode a plain `open(path, "w")` would give; mkstemp's temp files are 0600."""
    return 0o666 & ~_umask()


def dir_mode() -> int:
    return 0o777 & ~_umask()


TEMP_TAG = ".evis-tmp-"  # every temporary we create starts with this, then our pid (see clean_stale_temporaries)


def temp_prefix(name: str) -> str:
    """The name prefix of a temporary of this process for `name`: `.evis-tmp-<pid>-<name>.`."""
    return f"{TEMP_TAG}{os.getpid()}-{name}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def clean_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove our temporaries in `folder` whose process has ended (a crash or SIGKILL left them).

    Only names this module made (`.evis-tmp-<pid>-...`) are touched, and only when that pid
    is not running, so another process's write in progress is never pulled from under it.
    """
    removed: list[Path] = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(TEMP_TAG):
            continue
        pid_text, _, rest = entry.name[len(TEMP_TAG) :].partition("-")
        if not pid_text.isdigit() or _pid_alive(int(pid_text)):
            continue
        target = Path(folder) / rest.rsplit(".", 2)[0]
        if entry.name.endswith(".old") and rest.count(".") >= 2 and not target.exists():
            # atomic_dir was killed between its two renames: the old folder goes back, it was never replaced
            with contextlib.suppress(OSError):
                os.replace(entry, target)
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    os.fchmod(fd, file_mode())  # outputs are shared (Triton, other users), unlike temp files
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        fsync_path(tmp_path)  # the data is on disk before the name points at it
        os.replace(tmp_path, path)
        fsync_path(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def check_writable_dir(folder: str | os.PathLike, what: str, creating: str | None = None) -> Path:
    """One line unless files can be created in `folder` (or in the folders `mkdir -p` would make there).

    Run before long work: a read-only folder, a parent that is a file, or a full disk is
    reported up front, not after minutes. `creating` names the entry about to be made, for
    the message.
    """
    import errno

    folder = Path(folder)
    shown = folder / creating if creating else folder
    probe_dir = folder
    while not probe_dir.exists():
        if probe_dir.is_symlink():
            raise EvisError(f"{what} {shown}: {probe_dir} is a broken link")
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise EvisError(f"{what} {shown}: {probe_dir} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=temp_prefix("probe"), dir=probe_dir)
        try:
            os.write(fd, b"0" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        reason = {
            errno.EACCES: "permission denied",
            errno.EPERM: "permission denied",
            errno.EROFS: "read-only file system",
            errno.ENOSPC: "no space left on the device",
            errno.EDQUOT: "disk quota exceeded",
        }.get(exc.errno, exc.strerror or str(exc))
        raise EvisError(f"{what} {shown}: cannot write in {probe_dir} ({reason})") from None
    return folder


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, read in 1 MiB chunks (bundles record it for every graph, engine and checkpoint)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Build a folder in a temp sibling, then swap it in whole.

    An existing folder at `path` is replaced only after the block succeeds; on any
    failure (or KeyboardInterrupt) the temp folder is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(path.parent)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent))
    os.chmod(tmp, dir_mode())
    try:
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=temp_prefix(path.name), suffix=".old", dir=path.parent))
            os.rmdir(old)
            os.replace(path, old)
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old, path)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
