"""The hidden staging folder an export is built in, and the removal of those a killed export left behind.

An export builds its folder in `.NAME.partial-XXXXXXXX` beside `NAME` and renames it into place; a Python exception
removes it, but SIGKILL (the OOM killer, `kill -9`, a reboot) cannot, and a full-size one is gigabytes. So the first
thing written into a staging folder is its owner record (OWNER_FILE: pid, the process start time, hostname, boot id,
pid namespace, creation time), and before an export of NAME creates its own staging folder it removes the
`.NAME.partial-*` folders whose owner is provably dead: made on this host, and since then the machine restarted, or
no process has that pid, or the process with that pid started at another time (the pid was reused). Everything else
is kept: a live owner (a concurrent export of the same name), a folder made on another host (shared filesystem) or
in another container of this host (another pid namespace: its pids mean nothing here), a folder without a readable
owner record (an older colbert-onnx, or not an export's); the last three are named in a warning with their size, so
the user can delete them. Nothing is touched that is not a directory named exactly like a staging folder of NAME.
A removal that fails is a warning, never an export failure. docs/export.md, "Atomic export".
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
import warnings
from datetime import UTC, datetime
from pathlib import Path

OWNER_FILE = ".owner.json"
OWNER_FORMAT = "colbert-onnx-staging"
_SUFFIX = r"[a-z0-9_]{8}"  # what tempfile.mkdtemp appends to the prefix
DEAD, ALIVE, UNKNOWN = "dead", "alive", "unknown"


def staging_prefix(out: Path) -> str:
    return f".{out.name}.partial-"


def is_staging_name(out: Path, name: str) -> bool:
    """Whether `name` is exactly what make_staging names a staging folder of `out`."""
    return re.fullmatch(re.escape(staging_prefix(out)) + _SUFFIX, name) is not None


def make_staging(out: Path) -> Path:
    """Create the staging folder of `out` (in out.parent, which must exist) and write its owner record first."""
    staging = Path(tempfile.mkdtemp(prefix=staging_prefix(out), dir=out.parent))
    try:
        record = {"format": OWNER_FORMAT, "out": out.name, **_this_process(),
                  "created": datetime.now(UTC).isoformat(timespec="seconds")}
        partial = staging / f"{OWNER_FILE}.tmp"
        partial.write_text(json.dumps(record), encoding="utf-8")
        os.replace(partial, staging / OWNER_FILE)  # a reader never sees half a record
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def seal(staging: Path) -> None:
    """Remove the owner record of a complete staging folder, just before it is renamed into place."""
    (staging / OWNER_FILE).unlink(missing_ok=True)


def discard(staging: Path) -> None:
    """Best-effort removal of this export's staging folder (on a failure): the owner record goes last, so a kill
    during the removal leaves a folder the next export still recognises as dead."""
    try:
        _remove_staging(staging, [0])
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)


def remove_dead_staging(out: Path) -> None:
    """Remove the staging folders of `out` whose owner is provably dead; warn, in one line, what was freed, and name
    the folders kept because their owner cannot be checked. Never raises OSError."""
    removed: list[str] = []
    freed = [0]
    try:
        entries = sorted(os.scandir(out.parent), key=lambda e: e.name)
    except OSError:
        return  # creating the staging folder there will fail and say why
    for entry in entries:
        try:
            if not is_staging_name(out, entry.name) or not entry.is_dir(follow_symlinks=False):
                continue
        except OSError:
            continue
        path = Path(entry.path)
        verdict, why = owner_verdict(path, out)
        if verdict == ALIVE:
            continue
        if verdict == UNKNOWN:
            warnings.warn(f"kept {path} ({_human(_tree_size(path))}): {why}, so an export may still be writing it; "
                          "delete it yourself once no export of that folder is running", stacklevel=3)
            continue
        try:
            _remove_staging(path, freed)
            removed.append(str(path))
        except OSError as exc:
            warnings.warn(f"could not remove {path}, left by a killed export ({why}): {exc.strerror or exc}",
                          stacklevel=3)
    if removed:
        warnings.warn(f"removed {len(removed)} staging folder{'s' if len(removed) > 1 else ''} of killed exports "
                      f"({', '.join(removed)}): {freed[0]} bytes freed ({_human(freed[0])})", stacklevel=3)


def owner_verdict(staging: Path, out: Path) -> tuple[str, str]:
    """(DEAD, ALIVE or UNKNOWN, why) for the process that made `staging`, from its owner record."""
    try:
        owner = staging / OWNER_FILE
        if owner.is_symlink() or not owner.is_file():
            return UNKNOWN, "it has no owner record (made by an older colbert-onnx, or not by an export)"
        record = json.loads(owner.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return UNKNOWN, "its owner record is unreadable"
    if not isinstance(record, dict) or record.get("format") != OWNER_FORMAT or record.get("out") != out.name:
        return UNKNOWN, "its owner record is not one this exporter writes for this folder"
    pid, start_time = record.get("pid"), record.get("start_time")
    if not _is_int(pid) or pid <= 0 or not (start_time is None or _is_int(start_time)):
        return UNKNOWN, "its owner record is not one this exporter writes for this folder"
    here = _this_process()
    if record.get("hostname") != here["hostname"]:
        return UNKNOWN, f"it was made by pid {pid} on host {record.get('hostname')!r}, which cannot be checked here"
    if record.get("boot_id") and here["boot_id"] and record["boot_id"] != here["boot_id"]:
        return DEAD, f"pid {pid} ran before this machine restarted"
    if record.get("pid_namespace") != here["pid_namespace"]:
        return UNKNOWN, f"it was made by pid {pid} in another container (pid namespace) of this host"
    if process_is_gone(pid, start_time):
        return DEAD, f"pid {pid} is gone"
    return ALIVE, f"pid {pid} is running"


def process_is_gone(pid: int, start_time: int | None) -> bool:
    """True only when provably no process `pid` started at `start_time` (clock ticks after boot, /proc/PID/stat
    field 22) runs on this machine: no such pid, or that pid started at another time (reused). Without /proc the
    start time is unknown and a running pid counts as the owner."""
    if os.path.exists("/proc/self/stat"):
        try:
            started = _start_time(pid)
        except (FileNotFoundError, ProcessLookupError):
            return True
        except (OSError, ValueError, IndexError):
            return False
        return start_time is not None and started != start_time
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: it exists, owned by another user
        return False
    return False


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _this_process() -> dict:
    pid = os.getpid()
    try:
        start_time = _start_time(pid)
    except (OSError, ValueError, IndexError):
        start_time = None
    return {"pid": pid, "start_time": start_time, "hostname": socket.gethostname(),
            "boot_id": _read("/proc/sys/kernel/random/boot_id"), "pid_namespace": _pid_namespace()}


def _start_time(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    return int(stat[stat.rindex(")") + 2:].split()[19])  # after "(comm)" the fields start at the 3rd: 22 is [19]


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except (OSError, AttributeError):
        return None


def _remove_staging(staging: Path, freed: list[int]) -> None:
    """Remove `staging`, its owner record last; adds the bytes removed to freed[0]. A concurrent removal is fine."""
    try:
        entries = list(os.scandir(staging))
    except FileNotFoundError:
        return
    for entry in sorted(entries, key=lambda e: e.name == OWNER_FILE):
        _remove_entry(entry, freed)
    try:
        os.rmdir(staging)
    except FileNotFoundError:
        pass


def _remove_entry(entry: os.DirEntry, freed: list[int]) -> None:
    try:
        if entry.is_dir(follow_symlinks=False):
            _remove_staging(Path(entry.path), freed)
            return
        size = entry.stat(follow_symlinks=False).st_size
        os.unlink(entry.path)
        freed[0] += size
    except FileNotFoundError:
        pass


def _tree_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def _human(size: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"
