"""Child processes with memory and time limits for CPU work on attacker-sized input: limits, and a worker pool."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import math
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

_ROOT = str(Path(__file__).resolve().parents[2])
START_TIMEOUT = 60.0  # seconds for a new worker to import and warm up
TASKS_PER_WORKER = 200  # then it is replaced: whatever a long-lived parser leaks or fragments is given back
MAX_REPLY_BYTES = 256 * 2**20


class WorkerFailed(Exception):
    """A task gave no result: it ran out of time or memory, raised, or its worker died."""


def child_env() -> dict[str, str]:
    """A child's environment: ours, with this package importable even when it is not installed."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": _ROOT + (os.pathsep + path if path else "")}


def set_limits(max_memory_mb: int, cpu_seconds: int | None = None) -> None:
    """Cap this process's address space at its current size plus `max_memory_mb`, its CPU time, and core dumps."""
    import resource

    try:
        with open("/proc/self/statm") as f:
            base = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        base = 0
    limits = [(resource.RLIMIT_AS, base + max_memory_mb * 2**20, base + max_memory_mb * 2**20)]
    if cpu_seconds is not None:
        limits.append((resource.RLIMIT_CPU, cpu_seconds, cpu_seconds + 1))
    for which, soft, hard in limits:
        ceiling = resource.getrlimit(which)[1]
        if ceiling != resource.RLIM_INFINITY:
            soft, hard = min(soft, ceiling), min(hard, ceiling)
        resource.setrlimit(which, (soft, hard))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def default_size() -> int:
    """Workers in a pool: one per CPU this process may use, at most four."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(4, cpus or 1))


class _Worker:
    """One child process, fed pickled (function, arguments) and answering JSON over its own two pipes."""

    def __init__(self, max_memory_mb: int, warm_up: Callable[[], object] | None):
        self.max_memory_mb = max_memory_mb
        self.done = 0
        task_read, task_write = os.pipe()
        reply_read, reply_write = os.pipe()
        self.tasks = Connection(task_write, readable=False)
        self.replies = Connection(reply_read, writable=False)
        try:
            command = [sys.executable, "-m", "rumination.web.worker", str(task_read), str(reply_write)]
            self.process = subprocess.Popen(
                [*command, str(max_memory_mb)],
                pass_fds=(task_read, reply_write),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,  # library warnings must not reach the user's terminal
                env=child_env(),
            )
        except BaseException:
            self.tasks.close()
            self.replies.close()
            raise
        finally:
            os.close(task_read)
            os.close(reply_write)
        try:
            # The first task runs before the limits: imports and warm-up, with our sys.path (functions are
            # pickled by reference, as with multiprocessing).
            self.call(START_TIMEOUT, _start, (sys.path, warm_up))
        except BaseException:
            self.kill()
            raise

    def call(self, timeout: float, function: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        """Run `function(*args)` in the child within `timeout` seconds and return its JSON result."""
        try:
            self.tasks.send_bytes(pickle.dumps((function, args, timeout)))
            if not self.replies.poll(timeout):
                raise WorkerFailed(f"timed out after {timeout:g} s")
            reply = json.loads(self.replies.recv_bytes(MAX_REPLY_BYTES))
        except (EOFError, OSError, ValueError):
            raise WorkerFailed(self._death()) from None
        self.done += 1
        if "error" not in reply:
            return reply["result"]
        if reply["error"] == "memory":
            raise WorkerFailed(f"needed more than {self.max_memory_mb} MB")
        raise WorkerFailed(str(reply.get("message", "failed"))[:300])

    def _death(self) -> str:
        """Why the child stopped answering."""
        try:
            code = self.process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            return "the worker sent a malformed reply"
        if code < 0 and -code in (signal.SIGKILL, signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS):
            return f"the worker died ({signal.Signals(-code).name}; out of memory?)"
        return f"the worker exited with status {code}"

    def close(self) -> None:
        """Let the child finish (its task pipe closes) and reap it; kill it if it lingers."""
        self.tasks.close()
        self.replies.close()
        try:
            self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """Kill and reap the child."""
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        self.process.wait()
        self.tasks.close()
        self.replies.close()


class WorkerPool:
    """Persistent worker processes (started on demand) whose tasks are killed, worker and all, past their time."""

    def __init__(self, size: int, max_memory_mb: int, warm_up: Callable[[], object] | None = None):
        self.size, self.max_memory_mb, self.warm_up = size, max_memory_mb, warm_up
        self._idle: queue.LifoQueue[_Worker | None] = queue.LifoQueue()  # None: a worker not started yet
        for _ in range(size):
            self._idle.put(None)
        self._threads = ThreadPoolExecutor(size, thread_name_prefix="rumination-worker")
        self._closed = False

    def call(self, timeout: float, function: Callable[..., Any], *args: Any) -> Any:
        """Blocking: `function(*args)` in a worker within `timeout` seconds (JSON result), or WorkerFailed."""
        if self._closed:
            raise WorkerFailed("the worker pool is closed")
        worker = self._idle.get()
        try:
            if worker is None:
                worker = self._start()
            return worker.call(timeout, function, args)
        except BaseException:
            if worker is not None:
                worker.kill()  # an unfinished task may still be running there
                worker = None
            raise
        finally:
            if worker is not None and (self._closed or worker.done >= TASKS_PER_WORKER):
                worker.close()
                worker = None
            self._idle.put(worker)

    def _start(self) -> _Worker:
        try:
            return _Worker(self.max_memory_mb, self.warm_up)
        except OSError as exc:  # too many processes or open files: the caller falls back as for any failure
            raise WorkerFailed(f"could not start a worker: {exc}") from None

    async def run(self, timeout: float, function: Callable[..., Any], *args: Any) -> Any:
        """`call` awaited from the event loop, which keeps running meanwhile."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, partial(self.call, timeout, function, *args))

    def close(self) -> None:
        """Stop the idle workers now and the busy ones when their task ends."""
        self._closed = True
        idle: list[_Worker | None] = []
        with contextlib.suppress(queue.Empty):
            while len(idle) < self.size:
                idle.append(self._idle.get_nowait())
        for worker in idle:
            if worker is not None:
                worker.close()
            self._idle.put(None)
        self._threads.shutdown(wait=False)


_pools: dict[tuple[int, Any], WorkerPool] = {}
_pools_lock = threading.Lock()


def shared_pool(max_memory_mb: int, warm_up: Callable[[], object] | None = None) -> WorkerPool:
    """The process-wide pool for these settings (the pool is used from any thread or event loop)."""
    with _pools_lock:
        if not _pools:
            atexit.register(close_pools)
        key = (max_memory_mb, warm_up)
        if key not in _pools:
            _pools[key] = WorkerPool(default_size(), max_memory_mb, warm_up)
        return _pools[key]


def close_pools() -> None:
    """Close every shared pool (a later shared_pool() starts afresh)."""
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.close()


# --- the child ------------------------------------------------------------------------------------------------------


def _start(path: list[str], warm_up: Callable[[], object] | None) -> None:
    """The first task: the parent's import path, then the warm-up (imports, first-call costs)."""
    sys.path[:] = path
    if warm_up is not None:
        warm_up()


def _serve_one(tasks: Connection, replies: Connection) -> bool:
    """Run one task; False when the parent is gone or the process should end after a MemoryError."""
    try:
        task = tasks.recv_bytes()
    except EOFError:
        return False
    try:
        function, args, timeout = pickle.loads(task)
        # A backstop for a parent that died mid-task: SIGALRM's default action ends the process, even inside C code.
        signal.alarm(math.ceil(timeout) + 5)
        reply: dict[str, Any] = {"result": function(*args)}
    except MemoryError:
        reply = {"error": "memory"}
    except BaseException as exc:  # whatever the input provokes is the parent's to report
        reply = {"error": "raised", "message": f"{type(exc).__name__}: {exc}"}
    finally:
        signal.alarm(0)
    try:
        data = json.dumps(reply, ensure_ascii=False).encode("utf-8", "replace")
    except (TypeError, ValueError) as exc:
        data = json.dumps({"error": "raised", "message": f"unserialisable result: {exc}"}).encode()
    replies.send_bytes(data)
    return reply.get("error") != "memory"


def main() -> None:
    """Child entry point: argv holds the task pipe, the reply pipe and the memory limit in MB."""
    tasks = Connection(int(sys.argv[1]), writable=False)
    replies = Connection(int(sys.argv[2]), readable=False)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C at the terminal asks the parent to finish, not us to die
    with contextlib.suppress(OSError):
        os.nice(10)  # background work: the parent's event loop and model decoding come first on a busy machine
    if not _serve_one(tasks, replies):
        return
    set_limits(int(sys.argv[3]))
    while _serve_one(tasks, replies):
        pass


if __name__ == "__main__":
    main()
