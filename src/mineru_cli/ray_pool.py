"""Run the same plan (documents and page windows) on a Ray cluster (``--executor ray``).

Implements ``executor.Executor``, as ``pool.LocalPool`` does, so ``convert`` drives both the same
way, with the same guarantees:

- one Ray actor per engine worker: ``num_gpus=1`` per actor for GPU backends (Ray sets
  ``CUDA_VISIBLE_DEVICES`` for the actor), ``num_cpus=1`` otherwise; each actor imports MinerU
  once (``engine.init_worker``) and converts many tasks, so a model is loaded once per actor;
- per-task timeout: the driver kills the actor that holds a task past its time
  (``ray.kill``) and starts a fresh one; the task fails with ``timeout`` (transient);
- a lost actor (its process or node died: ``RayActorError``) fails or retries only the task
  it held; retries only for transient failures, with the same backoff as the local pool;
- actors are recycled after ``max_tasks`` tasks;
- results are committed by the actor itself through fsspec (``store.commit``: done-record
  last), so workers on other machines write straight to S3; page windows are parked under
  ``OUTPUT/.mineru-cli/windows/<doc>/`` and the merge task collects them, so windows may run
  on different nodes.

Inputs must be readable by every node: ``s3://`` inputs, or a path on a shared filesystem.
Ray is imported lazily (optional extra ``mineru-cli[ray]``).

Must not: import Ray at module level, or be imported by anything but ``executor.open_executor``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from typing import Any, Callable

from .jobs import Job, Lane, Outcome, retry_later

WINDOWS_DIR = ".mineru-cli/windows"


def ray_task(task: dict) -> dict:
    """Actor side: stage locally, run ``engine.run_task``, then publish a window or commit a
    finished document (done-record last). Never raises for document or storage problems."""
    from .engine import run_task

    ray_cfg = task.get("ray") or {}
    local = tempfile.mkdtemp(prefix="mineru-cli-ray-")
    try:
        t = dict(task, staging=os.path.join(local, "doc"), run_dir=local)
        if task["kind"] == "merge":
            t["windows"] = _gather_windows(ray_cfg, task["windows"], local)
        res = run_task(t)
        if not res.get("ok"):
            return res
        try:
            if task.get("window"):
                _publish_window(ray_cfg, task["window_name"], t["staging"])
            elif ray_cfg.get("on_empty") == "fail" and (res.get("quality") or {}).get("no_text"):
                return res  # the driver fails it; nothing is committed
            else:
                record = dict(ray_cfg["record"], pages=res.get("pages"), quality=res.get("quality") or {},
                              seconds=res.get("seconds", 0.0))
                record["attempts"] = list(record.get("attempts", [])) + [
                    {"attempt": task.get("attempt", 1), "status": "ok", "seconds": res.get("seconds", 0.0),
                     "node": os.uname().nodename}]
                from .store import commit

                res["commit_warnings"] = commit(_output(ray_cfg), ray_cfg["key"], t["staging"], record).warnings
                if task["kind"] == "merge":
                    _drop_windows(ray_cfg)
                res["committed"] = True
                res["record"] = record
        except Exception as exc:  # noqa: BLE001 - storage errors are reported, not raised
            from .storage import explain_storage_error

            return {"ok": False, "code": "storage_error", "transient": True,
                    "reason": f"storage error: {explain_storage_error(exc)}"}
        return res
    finally:
        shutil.rmtree(local, ignore_errors=True)


def _output(cfg: dict):
    from .store import open_output

    return open_output(cfg["output"], storage_options=cfg.get("storage_options") or {},
                       endpoint_url=cfg.get("endpoint_url"), staging_dir=tempfile.gettempdir())


def _publish_window(cfg: dict, name: str, folder: str) -> None:
    out = _output(cfg)
    base = out.path(WINDOWS_DIR, cfg["doc"], name)
    for dirpath, _dirs, files in os.walk(folder):
        for f in files:
            full = os.path.join(dirpath, f)
            rel = os.path.relpath(full, folder).replace(os.sep, "/")
            if out.is_local:
                os.makedirs(os.path.dirname(f"{base}/{rel}"), exist_ok=True)
                shutil.copyfile(full, f"{base}/{rel}")
            else:
                out.fs.put_file(full, f"{base}/{rel}")


def _gather_windows(cfg: dict, names: list[str], local: str) -> list[str]:
    out = _output(cfg)
    dirs = []
    for name in names:
        src = out.path(WINDOWS_DIR, cfg["doc"], name)
        dst = os.path.join(local, "w", name)
        os.makedirs(dst, exist_ok=True)
        for path in out.fs.find(src):
            rel = path[len(src.rstrip("/")) + 1:]
            os.makedirs(os.path.dirname(os.path.join(dst, rel)), exist_ok=True)
            out.fs.get_file(path, os.path.join(dst, rel))
        dirs.append(dst)
    return dirs


def _drop_windows(cfg: dict) -> None:
    out = _output(cfg)
    try:
        out.fs.rm(out.path(WINDOWS_DIR, cfg["doc"]), recursive=True)
    except FileNotFoundError:
        pass


def _forwarded_env() -> dict[str, str]:
    """Environment the driver hands to its Ray workers (runtime_env): MinerU's ``MINERU_*``
    settings, mineru-cli's test hooks, and the AWS variables (endpoint, region, credentials)
    so workers reach the same storage. Workers on other nodes otherwise keep their own
    environment (Ray starts them from the node's raylet, not from the driver)."""
    env = {k: v for k, v in os.environ.items() if k.startswith(("MINERU_", "AWS_"))}
    env.setdefault("MINERU_MODEL_SOURCE", "local")
    return env


class RayPool:
    """The Ray ``executor.Executor`` (see module docstring).

    ``address``: ``auto``, ``host:port``, ``ray://host:port`` or None (``RAY_ADDRESS``, else a
    new local cluster). An existing cluster is checked first (``ray_cluster.check_ray_cluster``:
    reachable, token accepted, same Ray and Python versions) so that a refused token or a wrong
    address is one line within seconds, not minutes of Ray's retries. Raises EnvironmentProblem
    (exit 3) when Ray is missing or the cluster cannot be used; ``warn`` gets the check's notes
    (no GPU in the cluster for a GPU backend).
    """

    def __init__(self, lanes: list[Lane], *, address: str | None, max_tasks: int, retries: int,
                 gpu: bool = False, quiet_mineru: bool = True,
                 on_attempt: Callable[[Job, dict], None] | None = None,
                 warn: Callable[[str], None] | None = None) -> None:
        from .errors import EnvironmentProblem

        try:
            import ray
        except ImportError:
            from .ray_cluster import NEEDS_RAY

            raise EnvironmentProblem(NEEDS_RAY) from None
        self.ray = ray
        address = address or os.environ.get("RAY_ADDRESS") or None
        if address is not None and not ray.is_initialized():
            from .ray_cluster import check_ray_cluster

            check = check_ray_cluster(address, need_gpus=gpu)
            if not check.ok:
                raise EnvironmentProblem(check.error)
            if check.note and warn and not address.startswith("ray://"):
                warn(check.note)
        try:
            if not ray.is_initialized():
                ray.init(address=address, include_dashboard=False, logging_level="WARNING",
                         log_to_driver=not quiet_mineru, ignore_reinit_error=True,
                         runtime_env={"env_vars": _forwarded_env()})
        except Exception as exc:  # noqa: BLE001
            raise EnvironmentProblem(f"cannot reach the Ray cluster at {address or 'a new local cluster'}: "
                                     f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}") from None
        self.lanes = lanes
        self.gpu = gpu
        self.quiet = quiet_mineru
        self.max_tasks = max_tasks
        self.retries = retries
        self.on_attempt = on_attempt
        self.inflight: dict[Any, tuple[Job, Any]] = {}
        self.waiting: list[Job] = []
        self.idle_actors: list[Any] = []
        self.uses: dict[Any, int] = {}
        self._actor_cls = ray.remote(_Worker)
        for lane in lanes:
            env = {k: v for k, v in lane.env.items() if k != "CUDA_VISIBLE_DEVICES"}
            for _ in range(lane.workers):
                self.idle_actors.append(self._new_actor(env))
        self._env = {k: v for k, v in (lanes[0].env if lanes else {}).items() if k != "CUDA_VISIBLE_DEVICES"}

    def _new_actor(self, env: dict | None = None):
        opts = {"num_gpus": 1, "num_cpus": 1} if self.gpu else {"num_cpus": 1}
        actor = self._actor_cls.options(**opts).remote(env if env is not None else self._env, self.quiet)
        self.uses[actor] = 0
        return actor

    def submit(self, job: Job) -> None:
        self.waiting.append(job)

    @property
    def idle(self) -> bool:
        return not self.inflight and not self.waiting

    def _dispatch(self, stopping: bool) -> None:
        if stopping:
            return
        now = time.time()
        for job in [j for j in self.waiting if j.not_before <= now]:
            if not self.idle_actors:
                break
            actor = self.idle_actors.pop()
            job.started = time.time()
            task = dict(job.task, attempt=job.attempt)
            ref = actor.run.remote(task)
            self.inflight[ref] = (job, actor)
            self.waiting.remove(job)

    def _replace(self, actor) -> None:
        try:
            self.ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001
            pass
        self.uses.pop(actor, None)
        self.idle_actors.append(self._new_actor())

    def poll(self, timeout: float = 0.2, stopping: bool = False) -> list[Outcome]:
        """Dispatch, wait up to ``timeout`` s, enforce timeouts, return finished outcomes."""
        from ray.exceptions import GetTimeoutError, RayActorError, RayError

        self._dispatch(stopping)
        if not self.inflight:
            time.sleep(min(timeout, 0.05))
            return []
        ready, _ = self.ray.wait(list(self.inflight), num_returns=1, timeout=timeout)
        finished: list[tuple[Job, dict, Any, bool]] = []
        for ref in ready:
            job, actor = self.inflight.pop(ref)
            try:
                res = self.ray.get(ref)
                healthy = True
            except RayActorError as exc:
                res = {"ok": False, "code": "worker_killed", "transient": True,
                       "reason": f"Ray worker lost (its process or node died): {type(exc).__name__}"}
                healthy = False
            except (RayError, GetTimeoutError) as exc:
                res = {"ok": False, "code": "worker_error", "transient": True,
                       "reason": f"Ray error: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"}
                healthy = False
            finished.append((job, res, actor, healthy))
        now = time.time()
        for ref, (job, actor) in list(self.inflight.items()):
            if now - job.started > job.timeout:
                self.inflight.pop(ref)
                finished.append((job, {"ok": False, "code": "timeout", "transient": True,
                                       "reason": f"timeout: no result after {job.timeout:.0f} s (Ray worker killed)"},
                                 actor, False))
        outcomes: list[Outcome] = []
        for job, res, actor, healthy in finished:
            if healthy:
                self.uses[actor] = self.uses.get(actor, 0) + 1
                if self.uses[actor] >= self.max_tasks:
                    self._replace(actor)
                else:
                    self.idle_actors.append(actor)
            else:
                self._replace(actor)
            if retry_later(job, res, retries=self.retries, stopping=stopping, waiting=self.waiting,
                           on_attempt=self.on_attempt):
                continue
            outcomes.append(Outcome(job=job, result=res, seconds=time.time() - job.started))
        return outcomes

    def running(self) -> list[Job]:
        """The jobs an actor holds."""
        return [j for j, _a in self.inflight.values()]

    def unqueue(self) -> None:
        """Nothing to take back: a job goes to an actor only when one is free (no prefetch), and
        queued jobs are never dispatched while stopping."""

    def close(self, kill: bool = False, grace: float = 0.0) -> None:
        for _ref, (_job, actor) in list(self.inflight.items()):
            try:
                self.ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001
                pass
        for actor in list(self.idle_actors):
            try:
                self.ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001
                pass
        self.inflight.clear()
        self.idle_actors.clear()
        try:
            self.ray.shutdown()
        except Exception:  # noqa: BLE001
            pass

    def peak_memory(self) -> dict[int, int]:
        """Not measured on Ray: always empty."""
        return {}


class _Worker:
    """The Ray actor: imports MinerU once, then runs tasks (``ray_task``)."""

    def __init__(self, env: dict, quiet: bool) -> None:
        from .engine import init_worker

        init_worker(env, quiet, None)
        self.pid = os.getpid()

    def run(self, task: dict) -> dict:
        return ray_task(task)
