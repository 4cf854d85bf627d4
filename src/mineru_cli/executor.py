"""The one interface ``convert`` runs tasks through, and the factory that picks the executor.

:class:`Executor` is what ``pool.LocalPool`` (worker processes on this machine) and
``ray_pool.RayPool`` (Ray actors) both implement; ``convert`` depends on it and on
:func:`open_executor`, nothing else of theirs.

Must not: import pebble, Ray or an executor module at module level (``open_executor`` imports
the chosen one), nor know about documents, OUTPUT or reports.
"""

from __future__ import annotations

from typing import Callable, Protocol

from .jobs import Job, Lane, Outcome


class Executor(Protocol):
    """Runs :class:`~mineru_cli.jobs.Job` s on worker lanes; the caller drives it.

    ``submit`` queues a job; ``poll`` starts what can run, waits up to ``timeout`` seconds and
    returns the finished outcomes (successes and final failures; transient failures are retried
    inside, ``jobs.retry_later``), starting nothing new when ``stopping``; ``idle`` is True when
    nothing is queued or running; ``running()`` lists the jobs a worker holds (or was sent);
    ``unqueue()`` takes back queued jobs no worker has started (they end as not started);
    ``peak_memory()`` is ``{worker pid: peak resident bytes}`` (empty when not measured);
    ``close(kill)`` stops the workers (``kill``: at once).
    """

    def submit(self, job: Job) -> None: ...

    def poll(self, timeout: float = 0.2, stopping: bool = False) -> list[Outcome]: ...

    @property
    def idle(self) -> bool: ...

    def running(self) -> list[Job]: ...

    def unqueue(self) -> None: ...

    def peak_memory(self) -> dict[int, int]: ...

    def close(self, kill: bool = False, grace: float = 0.0) -> None: ...


def open_executor(kind: str, lanes: list[Lane], *, run_dir: str, max_tasks: int, max_memory: int | None,
                  retries: int, quiet_mineru: bool, on_attempt: Callable[[Job, dict], None] | None,
                  ray_address: str | None = None, gpu: bool = False,
                  warn: Callable[[str], None] | None = None) -> Executor:
    """Start the executor ``kind`` (``local``: ``pool.LocalPool`` in ``run_dir``, its workers
    killed past ``max_memory`` bytes; ``ray``: ``ray_pool.RayPool`` at ``ray_address``, ``gpu``:
    one GPU per actor, ``warn`` gets the cluster check's notes). ``max_tasks``: tasks per worker
    before it is recycled; ``retries``: extra attempts for transient failures. Raises
    EnvironmentProblem when Ray is missing or its cluster cannot be used."""
    if kind == "ray":
        from .ray_pool import RayPool

        return RayPool(lanes, address=ray_address, max_tasks=max_tasks, retries=retries, gpu=gpu,
                       quiet_mineru=quiet_mineru, warn=warn, on_attempt=on_attempt)
    from .pool import LocalPool

    return LocalPool(lanes, run_dir=run_dir, max_tasks=max_tasks, max_memory=max_memory, retries=retries,
                     quiet_mineru=quiet_mineru, on_attempt=on_attempt)
