"""Forked worker processes that open connections, then hold them until the fleet ends.

`benchmarks/scale.py` needs a million sockets; a process may have 20,000 open files here
and cannot raise that, so the sockets live in dozens of processes. The fleet forks them
from the parent, which has imported everything already (start-up costs a fork, not an
interpreter), lets at most `concurrent` of them connect at a time, and counts what each
holds in a shared page (one int64 per worker, written by the worker as it goes, summed by
the parent whenever it samples).

Cleanup never depends on the parent's goodwill: each worker asks the kernel to SIGKILL it
when the parent dies (PR_SET_PDEATHSIG), and checks right after fork that the parent it
registered with is still there. A worker that has reported holds its sockets until its
hold pipe reaches EOF: the parent closing it, or the parent dying. `close()` ends the
workers gently, `kill()` at once; every way out of a `with Fleet(...)` block runs one.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import mmap
import os
import select
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["Fleet", "Job", "WorkerDied"]

PR_SET_PDEATHSIG = 1  # <sys/prctl.h>
# A job runs in the worker: it gets a progress(count) callback and returns its report (a
# JSON-able dict) and whatever must stay alive while the worker holds (its sockets).
Job = Callable[[Callable[[int], None]], tuple[dict[str, Any], object]]


class WorkerDied(RuntimeError):
    """A worker ended before it reported: its traceback went to stderr."""


@dataclass
class _Worker:
    index: int
    pid: int
    reports: int  # read end: the worker's one-line JSON report
    hold: int  # write end: closing it lets the worker exit
    forked: float
    buffer: bytes = b""
    report: dict[str, Any] | None = None
    reported: float = 0.0


def _die_with_parent(parent: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        os._exit(3)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(3)


class Fleet:
    """Up to `size` forked workers; `fds` are the parent's files workers must not keep
    (listeners: a worker holding a copy would keep a closed listener alive)."""

    def __init__(self, size: int, fds: list[int] | None = None) -> None:
        self._page = mmap.mmap(-1, max(8, 8 * size))
        self._counts = memoryview(self._page).cast("q")
        self._size = size
        self._parent_fds = list(fds or [])
        self.workers: list[_Worker] = []

    def __enter__(self) -> Fleet:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if kind is None:
            self.close()
        else:
            self.kill()

    def held(self) -> int:
        """Connections the workers hold now, as they last wrote it."""
        return sum(self._counts)

    def working(self) -> int:
        """Workers forked that have not reported yet."""
        return sum(1 for worker in self.workers if worker.report is None)

    def start(self, job: Job) -> None:
        index = len(self.workers)
        if index >= self._size:
            raise RuntimeError(f"the fleet has room for {self._size} workers")
        reports_r, reports_w = os.pipe()
        hold_r, hold_w = os.pipe()
        parent = os.getpid()
        forked = time.perf_counter()
        pid = os.fork()
        if pid == 0:  # the worker; it never returns from here
            code = 0
            try:
                _die_with_parent(parent)
                for fd in [*self._parent_fds, reports_r, hold_w]:
                    os.close(fd)
                for other in self.workers:
                    os.close(other.reports)
                    os.close(other.hold)
                counts = self._counts

                def progress(count: int) -> None:
                    counts[index] = count

                report, keep = job(progress)
                os.write(reports_w, json.dumps(report).encode() + b"\n")
                while os.read(hold_r, 64):  # until EOF: the parent closed it, or died
                    pass
                del keep
            except BaseException:
                traceback.print_exc()
                code = 1
            os._exit(code)
        os.close(reports_w)
        os.close(hold_r)
        self.workers.append(_Worker(index, pid, reports_r, hold_w, forked))

    def poll(self, timeout: float) -> list[_Worker]:
        """Wait up to `timeout` s for reports; the workers that reported in this call.

        Raises:
            WorkerDied: a worker closed its pipe without a report.
        """
        waiting = {w.reports: w for w in self.workers if w.report is None}
        if not waiting:
            time.sleep(timeout)
            return []
        ready, _, _ = select.select(list(waiting), [], [], timeout)
        done = []
        for fd in ready:
            worker = waiting[fd]
            chunk = os.read(fd, 65536)
            if not chunk:
                raise WorkerDied(f"worker {worker.index} (pid {worker.pid}) died")
            worker.buffer += chunk
            if worker.buffer.endswith(b"\n"):
                worker.report = json.loads(worker.buffer)
                worker.reported = time.perf_counter()
                done.append(worker)
        return done

    def close(self, seconds: float = 30.0) -> None:
        """Let every worker exit (its sockets close with it), then reap; kill stragglers."""
        for worker in self.workers:
            os.close(worker.hold)
            os.close(worker.reports)
        end = time.monotonic() + seconds
        for worker in self.workers:
            while time.monotonic() < end:
                pid, _ = os.waitpid(worker.pid, os.WNOHANG)
                if pid:
                    break
                time.sleep(0.01)
            else:
                self._kill_one(worker.pid)
        self.workers = []

    def kill(self) -> None:
        """End every worker now (SIGKILL) and reap it."""
        for worker in self.workers:
            self._kill_one(worker.pid)
            for fd in (worker.hold, worker.reports):
                with contextlib.suppress(OSError):  # close() may have closed them
                    os.close(fd)
        self.workers = []

    @staticmethod
    def _kill_one(pid: int) -> None:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ChildProcessError, ProcessLookupError):
            pass
