"""``mineru-cli doctor [OUTPUT]``: every probe, the backend decision with its reasons, the model
weights per tier, and (given OUTPUT) whether the output storage is writable.

Exit code 0 when ``convert`` would run with these settings (backend decided, tier resolvable,
storage writable), 3 when it would not. Imports are lazy: importing this module is cheap.

Must not: change anything it probes (the storage probe object is deleted at once), decide
anything itself (``backend`` does), or import rich or fsspec at module level.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

TIERS: tuple[str, ...] = ("flash", "basic", "standard", "advanced")
LOW_DISK_BYTES = 1024**3


@dataclass
class StorageCheck:
    """Result of writing then deleting a probe object under OUTPUT.

    ``writable``: the write and the delete both worked (for a local folder that does not exist yet:
    the nearest existing parent folder is writable, so convert can create it). ``free_bytes``: free
    disk for local paths (``shutil.disk_usage``), None otherwise. ``probe``: the object written.
    """

    url: str
    protocol: str
    writable: bool
    error: str | None = None
    free_bytes: int | None = None
    probe: str | None = None
    exists: bool | None = None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_storage(output: str, storage_options: dict[str, Any] | None = None,
                  endpoint_url: str | None = None) -> StorageCheck:
    """Write a small probe object under ``output`` (``storage.open_url(output, storage_options)``:
    the options as given), read it back, delete it.

    Never raises: failures come back as ``writable=False`` with ``error``. For local paths the
    folder is not created: when it does not exist, the probe goes into the nearest existing parent.
    """
    import os
    import shutil
    import uuid

    from .storage import open_url, protocol_of

    opts: dict[str, Any] = dict(storage_options or {})
    if endpoint_url and output.startswith(("s3://", "s3a://")):
        opts.setdefault("endpoint_url", endpoint_url)
    try:
        fs, path = open_url(output, opts)
    except Exception as exc:  # noqa: BLE001 - unknown protocol, missing s3fs, bad options
        return StorageCheck(url=output, protocol="?", writable=False, error=f"cannot open {output}: {exc}")
    protocol = protocol_of(fs)
    local = protocol in ("file", "local")
    name = f".mineru-cli-doctor-{uuid.uuid4().hex[:12]}"
    check = StorageCheck(url=output, protocol=protocol, writable=False)
    target_dir = path.rstrip("/") or path
    try:
        if local:
            if os.path.exists(path):
                check.exists = True
                if not os.path.isdir(path):
                    check.error = f"{output} exists and is not a folder"
                    return check
            else:
                check.exists = False
                parent = os.path.dirname(os.path.abspath(path))
                while parent and not os.path.exists(parent):
                    parent = os.path.dirname(parent)
                if not os.path.isdir(parent):
                    check.error = f"{output} cannot be created: {parent} is not a folder"
                    return check
                check.note = f"{output} does not exist yet; convert creates it under {parent}"
                target_dir = parent
            check.free_bytes = shutil.disk_usage(target_dir).free
        else:
            try:
                check.exists = bool(fs.exists(path))
            except Exception:  # noqa: BLE001 - existence is informative only
                check.exists = None
        probe = f"{target_dir.rstrip('/')}/{name}"
        check.probe = probe if not local else os.path.join(target_dir, name)
        payload = b"mineru-cli doctor write probe\n"
        fs.pipe_file(check.probe, payload)
        back = fs.cat_file(check.probe)
        fs.rm_file(check.probe)
        if back != payload:
            check.error = f"wrote {len(payload)} bytes to {check.probe} but read back {len(back)}"
            return check
        check.writable = True
    except Exception as exc:  # noqa: BLE001 - permission, network, credentials: all mean "not writable"
        check.error = f"cannot write to {output}: {type(exc).__name__}: {exc}"
    return check


def _tier_rows(decision: Any, machine: Any) -> list[dict[str, Any]]:
    """Weights per tier for the decided engine (or MinerU's auto choice when undecided)."""
    from .backend import VLM_ENGINE_OF

    if decision.backend != "none":
        vlm_engine, small, server = VLM_ENGINE_OF[decision.backend], decision.small_backend, decision.server_url
    elif decision.vlm_engine or decision.server_url:  # failed on the tier: the backend that was tried
        vlm_engine, small, server = decision.vlm_engine, decision.small_backend, decision.server_url
    else:
        vlm_engine, small, server = None, None, None
    rows = []
    for tier in TIERS:
        try:
            tm = machine.tier_status(tier, vlm_engine=vlm_engine, server_url=server, small_backend=small)
        except Exception as exc:  # noqa: BLE001 - the registry itself failed: show it
            rows.append({"tier": tier, "ready": False, "repos": [], "download_command": "", "error": str(exc)})
            continue
        rows.append({
            "tier": tier, "ready": tm.ready,
            "repos": [{"name": r.name, "ready": r.ready, "root": r.root, "missing": len(r.missing)} for r in tm.repos],
            "download_command": "" if tm.ready else tm.download_command, "error": None,
        })
    return rows


def collect(settings: Any, output: str | None, *, machine: Any = None) -> dict[str, Any]:
    """Run every check and return the report doctor prints (the ``--json`` object)."""
    from . import __version__
    from .backend import decide_backend, probe_machine, rules_table, worker_lanes

    machine = machine or probe_machine(settings)
    decision = decide_backend(settings, machine, strict=False)
    lanes = []
    if decision.ok:
        lanes = [{"label": ln.label, "workers": ln.workers, "env": ln.env} for ln in worker_lanes(decision, settings)]
    tiers = _tier_rows(decision, machine)
    storage = None
    problems = list(decision.problems)
    warnings = list(decision.warnings)
    if output:
        st = check_storage(output, *settings.output_storage())
        storage = st.to_dict()
        if not st.writable:
            problems.append(f"output storage not writable: {st.error}")
        elif st.free_bytes is not None and st.free_bytes < LOW_DISK_BYTES:
            warnings.append(f"only {st.free_bytes / 1024**3:.2f} GiB free under {output}")
    ray = None
    if getattr(settings, "executor", "local") == "ray" or getattr(settings, "ray_address", None):
        ray = _ray_check(settings, need_gpus=decision.backend in ("vllm", "lmdeploy"))
        if ray["error"]:
            problems.append(ray["error"])
        elif ray["note"]:
            warnings.append(ray["note"])
    ok = not problems
    return {
        "mineru_cli_version": __version__,
        "ok": ok,
        "exit_code": 0 if ok else 3,
        "problems": problems,
        "warnings": warnings,
        "machine": machine.to_dict(),
        "decision": decision.to_dict(),
        "lanes": lanes,
        "tiers": tiers,
        "storage": storage,
        "ray": ray,
        "rules": rules_table(),
    }


def _ray_check(settings: Any, *, need_gpus: bool) -> dict[str, Any]:
    """The Ray cluster ``convert --executor ray`` would use (``--ray-address``, else
    ``RAY_ADDRESS``), checked as convert checks it (``ray_cluster.check_ray_cluster``). Without
    an address convert starts a new local cluster: nothing to check but that Ray imports."""
    import os

    from .ray_cluster import NEEDS_RAY, RayClusterCheck, check_ray_cluster

    address = settings.ray_address or os.environ.get("RAY_ADDRESS") or None
    if address is None:
        check = RayClusterCheck(address="(new local cluster)")
        try:
            import ray

            check.driver_ray_version = ray.__version__
            check.note = "no --ray-address or RAY_ADDRESS: convert starts a new local Ray cluster"
        except ImportError:
            check.error = NEEDS_RAY
        return check.to_dict()
    return check_ray_cluster(address, need_gpus=need_gpus).to_dict()


def _print_ray(p: Any, ray: dict[str, Any]) -> None:
    from rich.markup import escape

    p()
    p("[bold]Ray cluster[/bold] (--executor ray)")
    p(f"  address: {escape(ray['address'])}" + (f" (GCS {escape(ray['gcs_address'])})"
                                                 if ray["gcs_address"] and ray["gcs_address"] != ray["address"] else ""))
    if ray["gcs_address"]:
        auth = {True: "accepted", False: "REFUSED", None: "not checked"}[ray["authenticated"]]
        sent = f"token from {ray['token_source']}" if ray["auth"] == "token" else "no token"
        p(f"  reachable: {'yes' if ray['reachable'] else 'NO'}; authentication: {auth} ({escape(sent)})")
    if ray["authenticated"]:
        same = "same" if ray["cluster_ray_version"] == ray["driver_ray_version"] else "DIFFERENT"
        p(f"  Ray: driver {ray['driver_ray_version']}, cluster {ray['cluster_ray_version'] or '?'} ({same}); "
          f"Python: driver {ray['driver_python_version']}, cluster {ray['cluster_python_version'] or '?'}")
        p(f"  resources: {ray['nodes']} alive node(s), {ray['cpus']:g} CPU(s), {ray['gpus']:g} GPU(s)")
    if ray["note"]:
        p(f"  note: {escape(ray['note'])}")
    if ray["error"]:
        p(f"  error: {escape(ray['error'])}")


def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / 1024**3:.1f} GiB"


def _print_text(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    con = Console(soft_wrap=True, highlight=False, emoji=False)
    p = con.print
    m = report["machine"]
    d = report["decision"]

    p(f"[bold]mineru-cli doctor[/bold] (mineru-cli {report['mineru_cli_version']})")
    p()
    p("[bold]GPU[/bold] (NVML)")
    g = m["gpu"]
    if g["error"]:
        p(f"  error: {escape(g['error'])}")
    elif not g["gpus"]:
        p(f"  no GPU: {escape(g['note'] or 'NVML lists no NVIDIA GPU')}")
    else:
        p(f"  driver {g['driver_version']}, CUDA {g['cuda_driver_version']}")
        t = Table(box=None, pad_edge=False, padding=(0, 2))
        for col in ("index", "name", "arch", "cc", "free", "total", "MIG"):
            t.add_column(col)
        for x in g["gpus"]:
            t.add_row(str(x["index"]), escape(x["name"]), x["architecture"], x["compute_capability"],
                      _gib(x["memory_free"]), _gib(x["memory_total"]), "on" if x["mig_enabled"] else "off")
        p(t)
    if m["cuda_visible_devices"] is not None:
        p(f"  CUDA_VISIBLE_DEVICES={escape(m['cuda_visible_devices'])!s}")
    p(f"  CPU: {m['cpus']} core(s), {_gib(m['memory_available'])} memory available")
    p()
    p("[bold]Engines[/bold] (package metadata, nothing imported)")
    for name, e in m["engines"].items():
        extra = ""
        if e["installed"] and e["build"]:
            extra = f" ({e['build']} build" + (f", CUDA {e['cuda']}" if e["cuda"] else "") + ")"
        p(f"  {name:<17} {escape(e['version']) if e['installed'] else 'not installed'}{extra}")
    p()
    p("[bold]Remote VLM server[/bold]")
    r = m["remote"]
    if r is None:
        p("  none configured (--server-url, or model.vlm.server_url in MinerU's configuration)")
    else:
        state = "reachable" if r["ok"] else "NOT usable"
        p(f"  {escape(r['url'])}: {state}, HTTP {r['status']}, models: {escape(', '.join(r['models']) or '-')}"
          f" ({r['elapsed_s']:.2f} s)")
        if r["error"]:
            p(f"  error: {escape(r['error'])}")
    p()
    p("[bold]Decision[/bold]")
    if d["ok"]:
        p(f"  backend: {d['backend']} (requested: {d['requested']})")
        p(f"  VLM engine: {d['vlm_engine'] or 'remote server'}; small models: {d['small_backend']}"
          + (f"; GPUs: {', '.join(map(str, d['gpus']))}" if d["gpus"] else ""))
        p(f"  tier: {d['tier']}")
    else:
        p(f"  backend: none (requested: {d['requested']})")
    p("  reasons:")
    for line in d["reasons"]:
        p(f"    - {escape(line)}")
    if d["rejected"]:
        p("  alternatives rejected:")
        for k, v in d["rejected"].items():
            p(f"    - {k}: {escape(v)}")
    if report["lanes"]:
        p("  workers:")
        for ln in report["lanes"]:
            env = " ".join(f"{k}={v}" for k, v in ln["env"].items())
            p(f"    - {ln['label']}: {ln['workers']} worker(s), {escape(env)}")
    p()
    shown_for = d["ok"] or d["vlm_engine"] or d["server_url"]
    p("[bold]Models per tier[/bold]" + (f" (for {d['vlm_engine'] or 'a remote VLM'}, small models {d['small_backend']})"
                                        if shown_for else ""))
    for row in report["tiers"]:
        if row["error"]:
            p(f"  {row['tier']:<9} error: {escape(row['error'])}")
            continue
        if row["tier"] == "flash":
            p(f"  {'flash':<9} ready (no model weights needed)")
            continue
        if row["ready"]:
            p(f"  {row['tier']:<9} ready ({', '.join(x['name'] for x in row['repos'])})")
        else:
            missing = ", ".join(f"{x['name']} ({x['root']})" for x in row["repos"] if not x["ready"])
            p(f"  {row['tier']:<9} missing: {escape(missing)}")
            p(f"  {'':<9} download: {escape(row['download_command'])}")
    st = report["storage"]
    if st is not None:
        p()
        p("[bold]Output storage[/bold]")
        p(f"  {escape(st['url'])} ({st['protocol']}): " + ("writable" if st["writable"] else "NOT writable"))
        if st["note"]:
            p(f"  {escape(st['note'])}")
        if st["error"]:
            p(f"  error: {escape(st['error'])}")
        if st["free_bytes"] is not None:
            p(f"  free disk: {_gib(st['free_bytes'])}")
    if report.get("ray") is not None:
        _print_ray(p, report["ray"])
    if report["warnings"]:
        p()
        p("[bold]Warnings[/bold]")
        for w in report["warnings"]:
            p(f"  - {escape(w)}")
    p()
    if report["ok"]:
        p("[bold green]OK[/bold green]: convert would run with these settings.")
    else:
        p("[bold red]NOT OK[/bold red]: convert would not run with these settings:")
        for prob in report["problems"]:
            p(f"  - {escape(prob)}")


def run_doctor(settings: Any, *, output: str | None, as_json: bool) -> int:
    """Print the doctor report for ``settings`` (and the storage at ``output``) to stdout, as
    rich text or, with ``as_json``, as one JSON object. Returns the exit code: 0 when convert
    would run (backend decided, tier resolvable, storage writable), 3 when not."""
    import json
    import sys

    import contextlib
    import io

    from .redact import redact_text

    report = collect(settings, output)
    if as_json:
        sys.stdout.write(redact_text(json.dumps(report, indent=2, default=str)) + "\n")
    else:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            _print_text(report)
        sys.stdout.write(redact_text(buf.getvalue()))
    return int(report["exit_code"])
