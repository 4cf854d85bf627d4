"""What a worker is asked to do for one document: the task dicts (``engine.run_task``'s input)
of a conversion, its page windows, a merge or a render-only rerun, their time limits, and the
attempt entries the report keeps of each try.

Must not: submit anything (``run`` does, through ``executor.Executor``), or read OUTPUT.
"""

from __future__ import annotations

import os
import shutil
import time

from .jobs import Job
from .records import new_record


def default_timeout(s, pages: int | None) -> float:
    """Seconds allowed for one task: ``--timeout``, else 300 + 5 per page (a 100-page text
    PDF takes about 6 s at tier flash, so this is generous; OCR tiers are slower)."""
    if s.timeout:
        return float(s.timeout)
    return 300.0 + 5.0 * (pages or 1)


def mineru_version() -> str | None:
    """The installed MinerU's version (package metadata), or None."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mineru")
    except PackageNotFoundError:
        return None


def task_base(st, s, out, run_dir: str) -> dict:
    """The task fields every task of document ``st`` (a ``run.DocState``) shares: input, stem,
    tier, OCR mode, formats, run folder; how to fetch a remote input; for Ray, where and how the
    worker commits (OUTPUT's storage settings and the would-be done-record)."""
    p = st.planned
    d = p.source
    task = {"kind": "convert", "input": d.uri, "stem": p.stem, "tier": p.tier or "flash",
            "ocr_mode": p.ocr_mode, "formats": list(s.format), "run_dir": run_dir, "doc": p.id}
    if not d.is_local:
        task["fetch"] = {"url": d.uri, "storage_options": _input_options_for(d.uri, s)}
    if s.executor == "ray":
        # Ray workers commit through fsspec themselves (they may run on other machines)
        from .sniff import fingerprint_local

        if p.fingerprint is None and d.is_local:
            p.fingerprint = fingerprint_local(d.uri)
        record = new_record(p, fingerprint=p.fingerprint, pages=p.pages, seconds=0.0, quality={}, attempts=[],
                            mineru_version=mineru_version())
        out_options, out_endpoint = s.output_storage()
        task["ray"] = {"output": s.output, "storage_options": out_options, "endpoint_url": out_endpoint,
                       "key": p.key, "doc": p.id, "record": record, "on_empty": s.on_empty}
    return task


def _input_options_for(url: str, s) -> dict:
    from .storage import fetch_options

    options, endpoint = s.input_storage()
    return fetch_options(url, options, endpoint)


def jobs_for(st, s, out, run_dir: str) -> list[Job]:
    """The jobs of document ``st``: one, or one per page window (``st.windows_left`` and
    ``st.window_dirs`` are set for the merge); its old staging folder is removed first."""
    p = st.planned
    staging = os.path.join(out.staging_root, p.id)
    shutil.rmtree(staging, ignore_errors=True)  # partial staging of a killed run is replaced
    base = task_base(st, s, out, run_dir)
    if not p.windows:
        task = dict(base, task_id=p.id, staging=staging, page_range=p.page_range)
        return [Job(task=task, timeout=default_timeout(s, p.pages), meta=("doc", p.id))]
    jobs = []
    st.windows_left = len(p.windows)
    for a, b in p.windows:
        wdir = os.path.join(staging, "w", f"{a:06d}-{b:06d}")
        st.window_dirs.append(wdir)
        task = dict(base, task_id=f"{p.id}:{a}-{b}", staging=wdir, page_range=f"{a}-{b}", window=[a, b],
                    window_name=f"{a:06d}-{b:06d}")
        jobs.append(Job(task=task, timeout=default_timeout(s, b - a + 1), meta=("window", p.id, a, b)))
    return jobs


def render_job(st, s, out, run_dir: str) -> Job:
    """The task that renders a finished result's missing formats from its middle JSON in a
    worker (``engine._render_only``): reads ``OUTPUT/key`` (a local folder, or its URL with the
    storage options), writes the new files into the document's staging folder."""
    p = st.planned
    staging = os.path.join(out.staging_root, p.id)
    shutil.rmtree(staging, ignore_errors=True)
    if out.is_local:
        where, options = out.path(p.key), {}
    else:
        from .storage import storage_options_for

        where, options = f"{out.url.rstrip('/')}/{p.key}", storage_options_for(out.url, dict(out.options), out.endpoint_url)
    task = {"kind": "render", "task_id": f"{p.id}:render", "doc": p.id, "input": p.source.uri, "stem": p.stem,
            "staging": staging, "result": where, "middle": f"{p.stem}_middle.json", "storage_options": options,
            "formats": list(p.render_formats), "run_dir": run_dir}
    return Job(task=task, timeout=default_timeout(s, p.pages), meta=("render", p.id))


def attempt_entry(job: Job, res: dict, status: str) -> dict:
    """The report's entry for one attempt of ``job`` with result ``res``: number, status, code,
    reason, seconds, start and end (epoch seconds), worker pid, and the pages or task kind."""
    now = time.time()
    a = {"attempt": job.attempt, "status": status, "code": res.get("code"), "reason": res.get("reason", ""),
         "seconds": round(res.get("seconds", now - job.started), 3),
         "started": res.get("started", round(job.started or now, 3)), "ended": res.get("ended", round(now, 3)),
         "worker": res.get("worker")}
    if job.task.get("window"):
        a["pages"] = "-".join(str(x) for x in job.task["window"])
    elif job.task.get("kind") in ("merge", "render"):
        a["task"] = job.task["kind"]
    return a
