"""One writer per MODEL_DIR: an advisory lock file, ``MODEL_DIR/.t5cli.lock``.

The training run holds ``fcntl.flock`` on the file for its whole life, and the file says
who holds it (JSON: ``host``, ``pid``, ``started``, ``command``). The kernel drops the
lock when the process ends, however it ends, so a lock whose holder died is free; its
stale contents are then taken over with a note. A second run finds the lock taken and
stops with one line naming the holder, before it has touched anything in MODEL_DIR.

A lock file left by a process on another host cannot be checked from here (``flock`` is
not shared by every network file system): a run refuses it and names the host and pid;
delete the file once that run is gone. In a multi-process job only process 0 takes the
lock: the job holds it, not each process.
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any, Dict, Optional

from t5cli.errors import RunLockedError, storage_error

LOCK_NAME = ".t5cli.lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    except OSError:
        return False
    return True


def _read(fd: int) -> Dict[str, Any]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = b""
        while chunk := os.read(fd, 65536):
            data += chunk
        out = json.loads(data.decode("utf-8")) if data.strip() else {}
        return out if isinstance(out, dict) else {}
    except (OSError, ValueError):
        return {}


def describe(holder: Dict[str, Any]) -> str:
    """``pid 123 on host h (started 2026-12-04T18:00:00Z)``."""
    text = f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"
    if holder.get("started"):
        text += f" (started {holder['started']})"
    return text


class RunLock:
    """The lock of one MODEL_DIR; :meth:`acquire` raises RunLockedError when it is taken."""

    def __init__(self, model_dir, *, enabled: Optional[bool] = None):
        self.model_dir = Path(model_dir)
        self.path = self.model_dir / LOCK_NAME
        if enabled is None:
            import jax

            enabled = jax.process_index() == 0
        self.enabled = enabled
        self.created_dir = False
        self.note: Optional[str] = None
        self._fd: Optional[int] = None

    def acquire(self) -> "RunLock":
        if not self.enabled or self._fd is not None:
            return self
        import fcntl

        try:
            if self.model_dir.exists() and not self.model_dir.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(self.model_dir))
            self.created_dir = not self.model_dir.exists()
            self.model_dir.mkdir(parents=True, exist_ok=True)
            for _ in range(10):  # the file may be replaced under us by a holder releasing it
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = _read(fd)
                    os.close(fd)
                    raise RunLockedError(
                        f"MODEL_DIR {self.model_dir} is in use by another training run, "
                        f"{describe(holder)}: wait for it to finish or stop it, or pass another "
                        f"--model-dir") from None
                except OSError:
                    os.close(fd)
                    raise
                try:
                    same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    break
                os.close(fd)
            else:
                raise RunLockedError(f"MODEL_DIR {self.model_dir}: cannot take its lock file {self.path}")
            try:
                self._take_over(fd, _read(fd))
            except BaseException:
                os.close(fd)
                raise
        except RunLockedError:
            if self.created_dir:
                self._remove_dir()
            raise
        except OSError as exc:
            if self.created_dir:
                self._remove_dir()
            hint = {errno.ENOTDIR: "MODEL_DIR must be a directory: pass another --model-dir",
                    errno.EEXIST: "MODEL_DIR must be a directory: pass another --model-dir",
                    errno.ENOSPC: "free some space, or pass another --model-dir"}.get(
                exc.errno, "pass a --model-dir on a writable file system")
            raise storage_error(exc, "cannot use MODEL_DIR", path=self.model_dir, hint=hint) or exc
        self._fd = fd
        return self

    def _take_over(self, fd: int, previous: Dict[str, Any]) -> None:
        host = socket.gethostname()
        if previous.get("pid") is not None:
            if previous.get("host") not in (None, host):
                raise RunLockedError(
                    f"MODEL_DIR {self.model_dir} is locked by {describe(previous)}, which cannot be "
                    f"checked from {host}: if that run is gone, delete {self.path}; else pass another "
                    f"--model-dir")
            pid = int(previous["pid"])
            if pid != os.getpid():
                state = "no longer runs" if not _pid_alive(pid) else "no longer holds it"
                self.note = (f"note: took over the lock of MODEL_DIR {self.model_dir} from "
                             f"{describe(previous)}, which {state}")
                print(self.note, file=sys.stderr, flush=True)
        record = {"host": host, "pid": os.getpid(),
                  "started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                  "command": " ".join(sys.argv[:1] + [a for a in sys.argv[1:3]])}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(record) + "\n").encode("utf-8"))
        os.fsync(fd)

    def release(self) -> None:
        """Remove the lock file and drop the lock (a MODEL_DIR this run created and left
        empty is removed too)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            try:
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    os.unlink(self.path)
            except OSError:
                pass
        finally:
            os.close(fd)  # drops the flock
        if self.created_dir:
            self._remove_dir()

    def _remove_dir(self) -> None:
        try:
            self.model_dir.rmdir()  # only while empty
        except OSError:
            pass

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "RunLock":
        """Acquire; in a multi-process job process 0 tells the others whether it got the lock
        (they stop with one line when it did not)."""
        import jax

        if jax.process_count() == 1:
            return self.acquire()
        from t5cli.runtime.distributed import broadcast_outcome

        error = None
        try:
            self.acquire()
        except Exception as exc:
            error = exc
        broadcast_outcome(error, f"take the lock of MODEL_DIR {self.model_dir}")
        return self

    def __exit__(self, *exc) -> None:
        self.release()


__all__ = ["RunLock", "LOCK_NAME", "describe"]
