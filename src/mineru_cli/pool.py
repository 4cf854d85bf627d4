"""The bounded worker pool: per-task timeouts, crash isolation, recycling, memory limit.

Built on pebble's ``ProcessPool`` (non-daemonic workers, so MinerU's own render processes
can start; per-task timeouts that kill the worker; ``max_tasks`` recycling). One pebble pool
per worker lane (a lane is one GPU, or the CPU), each with the lane's environment.

A monitor thread samples the resident memory of each busy worker with its descendants
(psutil) and kills the worker whose total passes ``max_worker_memory``; the task then fails
with ``memory limit``. When a worker dies or times out, the render processes it left behind
are killed too.

Implements ``executor.Executor``. Must not: decide retries differently from ``jobs.retry_later``,
know documents or OUTPUT (a task is an opaque dict for ``engine.run_task``), or import pebble
or psutil at module level.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any, Callable

from .engine import init_worker, run_task
from .jobs import Job, Lane, Outcome, retry_later
from .worker import RUNNING_DIR


def describe_exit(exitcode: int | None) -> tuple[str, str]:
    """``(code, reason)`` for a worker that died with ``exitcode`` (negative: killed by signal)."""
    if exitcode is not None and exitcode < 0:
        sig = -exitcode
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        if sig == signal.SIGKILL:
            return "worker_killed", (f"worker killed by signal {sig} ({name}; likely out of memory; "
                                     "try fewer --workers or --max-worker-memory)")
        if sig == signal.SIGSEGV:
            return "worker_killed", f"worker killed by signal {sig} ({name}; a native library crashed)"
        return "worker_killed", f"worker killed by signal {sig} ({name})"
    if exitcode == signal.SIGTERM:
        # pebble's workers handle SIGTERM by exiting with code 15
        return "worker_killed", f"worker stopped by signal {exitcode} (SIGTERM)"
    return "worker_crashed", f"worker exited unexpectedly with code {exitcode}"


def human_bytes(n: int) -> str:
    """``1.2 GB`` / ``350 MB`` (powers of 1000, as ``--max-worker-memory 4GB`` reads)."""
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def tree_rss(proc: Any) -> tuple[int, list]:
    """Resident memory (bytes) of a ``psutil.Process`` plus all its descendants (a worker with
    MinerU's render processes), and the descendants. Descendants that end while being read
    are left out; raises ``psutil.Error`` when ``proc`` itself is gone."""
    import psutil

    kids = proc.children(recursive=True)
    rss = proc.memory_info().rss
    for k in kids:
        try:
            rss += k.memory_info().rss
        except psutil.Error:
            pass
    return rss, kids


def children_tree_rss(proc: Any) -> dict[int, int]:
    """``{pid: tree_rss}`` for each direct child of a ``psutil.Process`` (a pool's workers),
    skipping children that end while being read; raises ``psutil.Error`` when ``proc`` is gone.
    Used by the benchmarks and the memory tests to sample what the monitor limits."""
    import psutil

    out: dict[int, int] = {}
    for child in proc.children():
        try:
            out[child.pid] = tree_rss(child)[0]
        except psutil.Error:
            continue
    return out


class MemoryMonitor(threading.Thread):
    """Samples busy workers' resident memory (worker + descendants, bytes) every ``interval``
    seconds; kills a worker over ``limit``. Also remembers each worker's descendants so that
    orphans can be killed when the worker dies (``reap``)."""

    def __init__(self, run_dir: str, limit: int | None, interval: float = 0.25) -> None:
        super().__init__(daemon=True, name="mineru-cli-memory-monitor")
        self.run_dir, self.limit, self.interval = run_dir, limit, interval
        self.killed_tasks: dict[str, int] = {}  # task_id -> rss at kill
        self.peak: dict[int, int] = {}  # worker pid -> peak rss (with descendants)
        self.descendants: dict[int, set[int]] = {}
        self.task_pid: dict[str, int] = {}
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()

    def busy(self) -> dict[int, dict]:
        """``{worker pid: {"task_id", "input", "started"}}`` from the workers' marker files."""
        out: dict[int, dict] = {}
        folder = os.path.join(self.run_dir, RUNNING_DIR)
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return out
        for name in names:
            try:
                with open(os.path.join(folder, name), encoding="utf-8") as fh:
                    out[int(name)] = json.load(fh)
            except (OSError, ValueError):
                continue
        return out

    def run(self) -> None:
        import psutil

        while not self._halt.wait(self.interval):
            for pid, info in self.busy().items():
                try:
                    rss, kids = tree_rss(psutil.Process(pid))
                except psutil.Error:
                    continue
                self.task_pid[info["task_id"]] = pid
                self.descendants[pid] = {k.pid for k in kids}
                self.peak[pid] = max(self.peak.get(pid, 0), rss)
                if self.limit and rss > self.limit:
                    self.killed_tasks[info["task_id"]] = rss
                    for k in kids:
                        _kill(k.pid)
                    _kill(pid)

    def forget(self, task_id: str) -> None:
        """Drop what was noted of a task that ended (its worker's pid), so the monitor holds
        nothing per task of a long run."""
        self.task_pid.pop(task_id, None)
        self.killed_tasks.pop(task_id, None)

    def reap(self, task_id: str) -> None:
        """Kill what the worker that ran ``task_id`` left behind, and drop its marker."""
        pid = self.task_pid.get(task_id)
        if pid is None:
            for p, info in self.busy().items():
                if info.get("task_id") == task_id:
                    pid = p
        if pid is None:
            return
        for k in self.descendants.get(pid, ()):
            _kill(k)
        try:
            os.remove(os.path.join(self.run_dir, RUNNING_DIR, str(pid)))
        except OSError:
            pass


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class LocalPool:
    """Runs jobs on worker lanes of this machine; implements ``executor.Executor`` (the caller
    drives it with ``submit`` / ``poll``).

    ``retries``: extra attempts for transient failures (worker crash, timeout, storage),
    with backoff ``min(30, 2 ** (attempt - 1))`` seconds. Outcomes (successes and final
    failures) come back from ``poll``; ``on_attempt(job, result)`` sees every failed attempt
    that will be retried.

    ``prefetch``: tasks queued per worker beyond the one it runs, so that a worker that
    finishes a small document starts the next one at once instead of waiting for the parent
    to hear of the result and send more (its share of the speed-up on 10 ms documents was
    not measured apart from the other changes of that round). pebble starts a task's timeout when a worker takes it
    (its acknowledgement), not when it is queued. When the run stops, queued tasks that no
    worker has taken are cancelled and come back as never started.
    """

    def __init__(self, lanes: list[Lane], *, run_dir: str, max_tasks: int, max_memory: int | None,
                 retries: int, quiet_mineru: bool = True,
                 on_attempt: Callable[[Job, dict], None] | None = None, prefetch: int = 1) -> None:
        from pebble import ProcessPool

        self.lanes = lanes
        self.run_dir = run_dir
        os.makedirs(os.path.join(run_dir, RUNNING_DIR), exist_ok=True)
        import multiprocessing

        # spawn, not fork: the parent has threads (monitor, commits) and may have imported
        # parts of MinerU; a forked child would inherit both.
        ctx = multiprocessing.get_context("spawn")
        self.pools = [ProcessPool(max_workers=lane.workers, max_tasks=max_tasks, initializer=init_worker,
                                  initargs=(lane.env, quiet_mineru, os.path.join(run_dir, "logs") if quiet_mineru else None),
                                  context=ctx) for lane in lanes]
        self.capacity = [lane.workers * (1 + max(0, prefetch)) for lane in lanes]
        self.inflight: dict[Future, Job] = {}
        self.waiting: list[Job] = []
        self.retries = retries
        self.on_attempt = on_attempt
        self.monitor = MemoryMonitor(run_dir, max_memory)
        self.monitor.start()

    def submit(self, job: Job) -> None:
        self.waiting.append(job)

    @property
    def idle(self) -> bool:
        return not self.inflight and not self.waiting

    def _lane_load(self, i: int) -> int:
        return sum(1 for j in self.inflight.values() if j.lane == i)

    def _dispatch(self, stopping: bool) -> None:
        if stopping:
            return
        now = time.time()
        ready = [j for j in self.waiting if j.not_before <= now]
        for job in ready:
            lane = min(range(len(self.pools)), key=lambda i: self._lane_load(i) / self.capacity[i])
            if self._lane_load(lane) >= self.capacity[lane]:
                break
            job.lane = lane
            job.started = time.time()
            fut = self.pools[lane].schedule(run_task, args=(job.task,), timeout=job.timeout)
            self.inflight[fut] = job
            self.waiting.remove(job)

    def poll(self, timeout: float = 0.2, stopping: bool = False) -> list[Outcome]:
        """Dispatch what can run, wait up to ``timeout`` s, return finished outcomes."""
        if stopping:
            self.unqueue()
        self._dispatch(stopping)
        if not self.inflight:
            time.sleep(min(timeout, 0.05))
            return []
        done, _ = wait(list(self.inflight), timeout=timeout, return_when=FIRST_COMPLETED)
        outcomes: list[Outcome] = []
        for fut in done:
            job = self.inflight.pop(fut)
            seconds = time.time() - job.started
            result = self._result(fut, job)
            self.monitor.forget(job.task["task_id"])  # what the monitor noted of it: held per task in flight only
            if retry_later(job, result, retries=self.retries, stopping=stopping, waiting=self.waiting,
                           on_attempt=self.on_attempt):
                continue
            outcomes.append(Outcome(job=job, result=result, seconds=seconds))
        return outcomes

    def unqueue(self) -> None:
        """Cancel queued tasks no worker has taken yet (``prefetch``); their jobs go back to
        ``waiting`` and are never dispatched while stopping, so they end as not started."""
        for fut, job in list(self.inflight.items()):
            if not fut.running() and not fut.done() and fut.cancel():
                del self.inflight[fut]
                self.waiting.insert(0, job)

    def _result(self, fut: Future, job: Job) -> dict:
        from concurrent.futures import CancelledError
        from concurrent.futures import TimeoutError as FutTimeout

        from pebble import ProcessExpired

        task_id = job.task["task_id"]
        try:
            return fut.result()
        except FutTimeout:
            self.monitor.reap(task_id)
            return {"ok": False, "code": "timeout", "transient": True,
                    "reason": f"timeout: no result after {job.timeout:.0f} s (worker killed)"}
        except ProcessExpired as exc:
            self.monitor.reap(task_id)
            if task_id in self.monitor.killed_tasks:
                rss = self.monitor.killed_tasks.pop(task_id)
                return {"ok": False, "code": "memory_limit", "transient": False,
                        "reason": (f"memory limit: worker used {human_bytes(rss)} > --max-worker-memory "
                                   f"{human_bytes(self.monitor.limit or 0)} (worker killed)")}
            code, reason = describe_exit(exc.exitcode)
            return {"ok": False, "code": code, "reason": reason, "transient": True}
        except CancelledError:
            return {"ok": False, "code": "interrupted", "transient": False, "reason": "interrupted before it finished"}
        except Exception as exc:  # noqa: BLE001 - pickling errors and the like
            return {"ok": False, "code": "worker_error", "transient": True,
                    "reason": f"worker error: {type(exc).__name__}: {exc}"}

    def running(self) -> list[Job]:
        """The jobs sent to a worker (running, or queued in its prefetch slot)."""
        return list(self.inflight.values())

    def close(self, kill: bool = False, grace: float = 0.0) -> None:
        """Stop the pools: wait up to ``grace`` s for running tasks, then kill the workers
        and their render processes."""
        deadline = time.time() + grace
        while self.inflight and time.time() < deadline:
            time.sleep(0.1)
            if all(f.done() for f in self.inflight):
                break
        for p in self.pools:
            if kill or self.inflight:
                p.stop()
            else:
                p.close()
        for pid, kids in list(self.monitor.descendants.items()):
            if kill or self.inflight:
                for k in kids:
                    _kill(k)
        for p in self.pools:
            try:
                p.join(timeout=10)
            except Exception:  # noqa: BLE001
                pass
        self.monitor.stop()

    def peak_memory(self) -> dict[int, int]:
        """``{worker pid: peak resident bytes of the worker with its descendants}``."""
        return dict(self.monitor.peak)
