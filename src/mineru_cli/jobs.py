"""What an executor is given and gives back: worker lanes, jobs, outcomes, and the retry rule.

A :class:`Job` is one task (the dict a worker's ``engine.run_task`` receives) with its parent-side
bookkeeping; an :class:`Outcome` is what happened to its last attempt. Both executors
(``pool.LocalPool``, ``ray_pool.RayPool``) share :func:`retry_later`, so a transient failure is
retried the same way on either.

Must not: import an executor, MinerU, or anything heavy (``convert`` imports it at module level).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class Lane:
    """``label`` (for messages), ``env`` for the workers, ``workers`` (processes)."""

    label: str
    env: dict[str, str]
    workers: int


@dataclass
class Job:
    """A task and its bookkeeping in the parent: ``task`` is the dict given to the worker;
    ``timeout`` in seconds; ``attempt`` from 1; ``not_before``/``started`` as ``time.time()``."""

    task: dict
    timeout: float
    attempt: int = 1
    not_before: float = 0.0
    started: float = 0.0
    lane: int = 0
    meta: Any = None


@dataclass
class Outcome:
    """What happened to one attempt of a job: ``result`` is the worker's dict (with ``ok``);
    ``seconds`` since the attempt started."""

    job: Job
    result: dict
    seconds: float


def retry_later(job: Job, result: dict, *, retries: int, stopping: bool, waiting: list[Job],
                on_attempt: Callable[[Job, dict], None] | None) -> bool:
    """Queue the next attempt of ``job`` on ``waiting`` when ``result`` is a transient failure
    and attempts are left (``retries`` extra ones) and the run is not stopping; the next attempt
    starts no sooner than ``min(30, 2 ** (attempt - 1))`` seconds from now. ``on_attempt`` sees the
    failed attempt first. Returns True when it was queued (no outcome to report yet)."""
    if result.get("ok") or not result.get("transient") or job.attempt > retries or stopping:
        return False
    if on_attempt:
        on_attempt(job, result)
    waiting.append(Job(task=job.task, timeout=job.timeout, attempt=job.attempt + 1,
                       not_before=time.time() + min(30.0, 2.0 ** (job.attempt - 1)), meta=job.meta))
    return True
