"""One writer per folder: an exclusive lock file held for as long as the work runs.

A trainer holds ``RUN_DIR/lock`` (rank 0, the whole run); a launcher holds ``ROOT/<table>/launch.lock``
while it plans and submits. A second process finds the lock taken and is told who holds it
(host, pid, scheduler job id, since when, last heartbeat) in one line.

How it works, and on which file systems it is safe:
* ``fcntl.flock`` on the lock file. The kernel releases it when the holder dies, however it
  dies (kill -9 included), so a crashed holder never blocks the next start on the same host.
  On local disks, NFSv4 (Linux maps flock to a whole-file lock held by the server; a dead
  client's lock is released when its lease expires), GPFS/Spectrum Scale, Lustre mounted with
  ``-o flock`` and BeeGFS with ``tuneUseGlobalFileLocks`` the lock is coherent across hosts:
  **safe**.
* Where flock only sees one host (Lustre ``-o localflock``, BeeGFS's default, NFSv3 without a
  lock manager, some FUSE file systems), the holder's record in the file decides: the holder
  touches the file every ``HEARTBEAT_S`` seconds, and a record naming another host whose
  heartbeat is younger than ``stale_s()`` (``PRUNEREPRO_LOCK_STALE_S``, default 600 s) is
  respected. An older one is taken over (with a warning): that host stopped beating, i.e. the
  holder died or its node is gone. Safe as long as the hosts' clocks agree to well within
  ``stale_s()`` and a live holder is never frozen for that long (a SLURM-suspended job is).
* Where flock is not supported at all (Lustre mounted ``-o noflock``), the heartbeat rule alone
  decides, and two processes starting within the same second can both win: not safe; mount
  with ``flock`` or keep run folders on another file system.
Rules on acquiring: the kernel lock is busy -> refused. It is free and the record names this
host -> the holder is gone (a live holder on this host would hold the kernel lock): taken over.
It is free and the record names another host -> the heartbeat decides (above).

The file is never replaced, only written in place (flock belongs to the inode), and it is
removed on release; an acquirer checks that the path still names the inode it locked.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

HEARTBEAT_S = 30.0
STALE_ENV = "PRUNEREPRO_LOCK_STALE_S"
_JOB_VARS = ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_ID", "TORCHELASTIC_RUN_ID")


class LockHeld(RuntimeError):
    """Another live process holds the lock; the message names it (one line)."""


def stale_s() -> float:
    return float(os.environ.get(STALE_ENV, "600"))


def holder_record(what: str) -> dict:
    job = " ".join(f"{k.lower()}={os.environ[k]}" for k in _JOB_VARS if os.environ.get(k))
    return {"host": socket.gethostname(), "pid": os.getpid(), "job": job, "what": what,
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def describe(rec: dict | None, age_s: float | None) -> str:
    if not rec:
        return "another process (its record is not readable yet)"
    job = f", {rec['job']}" if rec.get("job") else ""
    beat = f", last heartbeat {age_s:.0f} s ago" if age_s is not None else ""
    return f"pid {rec.get('pid')} on host {rec.get('host')} ({rec.get('what', '?')}{job}, since {rec.get('started')}{beat})"


def read_holder(path: Path) -> tuple[dict | None, float | None]:
    """(the recorded holder, seconds since its last heartbeat); (None, None) if there is none."""
    try:
        text = Path(path).read_text()
        age = time.time() - Path(path).stat().st_mtime
    except OSError:
        return None, None
    try:
        rec = json.loads(text)
    except ValueError:  # empty (being written, or released) or foreign
        return None, age
    return (rec if isinstance(rec, dict) else None), age


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


class FolderLock:
    """``with FolderLock(path, what):`` or acquire()/release(). Raises LockHeld (busy) or OSError."""

    def __init__(self, path: str | os.PathLike, what: str):
        self.path, self.what = Path(path), what
        self.fd: int | None = None
        self.kernel = True  # False where the file system has no flock: the record alone decides
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    # ------------------------------------------------------------------ acquiring
    def _open_locked(self) -> bool:
        """Open the file and take the kernel lock; False when it is busy. True also when the file
        system has no flock (then only the record decides)."""
        for _ in range(20):  # the file may be removed by a releasing holder between open and lock
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    return False
                if e.errno in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                    log.warning("%s: this file system does not support flock (%s); only the holder's "
                                "heartbeat protects this folder", self.path, e.strerror)
                    self.fd, self.kernel = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644), False
                    return True
                raise
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                return True
            os.close(fd)  # locked an inode that was just removed: try the new file
        raise OSError(errno.EBUSY, f"{self.path} keeps changing under us")

    def _refuse_live_foreign_holder(self) -> None:
        rec, age = read_holder(self.path)
        if not rec or rec.get("host") == socket.gethostname():
            if rec and not self.kernel and rec.get("pid") != os.getpid() and _alive(rec.get("pid")):
                self._close()
                raise LockHeld(describe(rec, age))
            if rec and rec.get("pid") != os.getpid():
                log.warning("taking over %s from %s: it no longer holds the lock", self.path, describe(rec, age))
            return
        if age is not None and age < stale_s():
            self._close()  # (the kernel lock was free: a host-local flock, or that host died)
            raise LockHeld(f"{describe(rec, age)}; taken over once its heartbeat is {stale_s():.0f} s old")
        log.warning("taking over %s from %s: no heartbeat for more than %.0f s", self.path, describe(rec, age),
                    stale_s())

    def acquire(self) -> "FolderLock":
        if not self._open_locked():
            rec, age = read_holder(self.path)
            for _ in range(20):  # a holder that has just started may not have written its record yet
                if rec:
                    break
                time.sleep(0.05)
                rec, age = read_holder(self.path)
            raise LockHeld(describe(rec, age))
        self._refuse_live_foreign_holder()
        data = json.dumps(holder_record(self.what)).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)
        os.fsync(self.fd)
        self._beat = threading.Thread(target=self._heartbeat, name="lock-heartbeat", daemon=True)
        self._beat.start()
        return self

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    # ------------------------------------------------------------------ releasing
    def _close(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)  # closing the last descriptor releases the kernel lock
            self.fd = None

    def release(self) -> None:
        if self.fd is None:
            return
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # while still locked: a waiting opener sees the inode change
        self._close()

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def holder(path: str | os.PathLike) -> str | None:
    """Who holds the lock now (a description), or None; reads only, never creates the file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None  # nobody holds it: a leftover of a holder that died
    except OSError:
        return describe(*read_holder(Path(path)))
    finally:
        os.close(fd)


def acquire_waiting(path: str | os.PathLike, what: str, wait_s: float, poll_s: float = 0.5,
                    on_wait=None) -> FolderLock:
    """Acquire, retrying for up to ``wait_s`` seconds while another process holds the lock
    (``on_wait(message)`` is called once, when the first attempt is refused)."""
    end = time.time() + wait_s
    told = False
    while True:
        try:
            return FolderLock(path, what).acquire()
        except LockHeld as e:
            if time.time() >= end:
                raise
            if not told and on_wait is not None:
                on_wait(str(e))
                told = True
            time.sleep(poll_s)
