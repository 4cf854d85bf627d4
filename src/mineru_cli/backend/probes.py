"""Probes of this machine: NVIDIA GPUs through NVML, engines from package metadata, the remote
VLM server's ``/v1/models``, MinerU's own VLM settings; :func:`probe_machine` bundles them.

Each probe is bounded in time and returns what it found (errors as data, never raised for a
missing GPU or server). Must not: decide anything (``decision``), or import pynvml, mineru or
psutil at module level (they are imported lazily, inside the probes).
"""

from __future__ import annotations

import os
import re
import threading
import time
from typing import Any, Callable

from ..models import TierModels, tier_models
from .machine import (DRIVER_MISMATCH_EXPLANATION, ENGINE_DISTRIBUTIONS, EngineInfo, GpuInfo, GpuProbe, MachineProbe,
                      RemoteProbe, VlmSettings, _effective_cpus)


class ProbeTimeout(Exception):
    """A probe did not finish within its time limit."""


def _call_with_timeout(fn: Callable[[], Any], timeout: float, name: str) -> Any:
    """Run ``fn()`` in a daemon thread; return its value, re-raise its exception, or raise
    ProbeTimeout after ``timeout`` seconds (the thread is abandoned, not killed)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"mineru-cli-probe-{name}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise ProbeTimeout(f"{name} did not answer within {timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _nvml_read(pynvml: Any) -> tuple[str | None, str | None, list[GpuInfo]]:
    pynvml.nvmlInit()
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        cuda: str | None = None
        try:
            raw = int(pynvml.nvmlSystemGetCudaDriverVersion())  # e.g. 12040
            cuda = f"{raw // 1000}.{(raw % 1000) // 10}"
        except pynvml.NVMLError:
            pass
        gpus: list[GpuInfo] = []
        for index in range(int(pynvml.nvmlDeviceGetCount())):
            try:
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                name = _text(pynvml.nvmlDeviceGetName(handle))
                major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
                mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
                uuid = ""
                try:
                    uuid = _text(pynvml.nvmlDeviceGetUUID(handle))
                except pynvml.NVMLError:
                    pass
                mig = False
                try:
                    current, _pending = pynvml.nvmlDeviceGetMigMode(handle)
                    mig = current == getattr(pynvml, "NVML_DEVICE_MIG_ENABLE", 1)
                except pynvml.NVMLError:
                    pass  # not supported on this GPU
                gpus.append(GpuInfo(index=index, name=name, compute_capability=(int(major), int(minor)),
                                    memory_total=int(mem.total), memory_free=int(mem.free), uuid=uuid, mig_enabled=mig))
            except pynvml.NVMLError as exc:
                gpus.append(GpuInfo(index=index, name="?", compute_capability=(0, 0), memory_total=0, memory_free=0,
                                    error=f"NVML cannot read this GPU: {exc}"))
        return driver, cuda, gpus
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001 - shutting down a half-initialised NVML
            pass


def probe_gpus(timeout: float = 5.0) -> GpuProbe:
    """Ask NVML (nvidia-ml-py, ``import pynvml``) for the driver and every NVIDIA GPU.

    Returns a :class:`GpuProbe`; never raises. Runs in a thread limited to ``timeout`` seconds
    (a wedged driver can hang NVML calls). Mapping of NVML failures:

    - ``NVMLError_LibraryNotFound`` (no ``libnvidia-ml.so.1``): no GPU, ``error`` None, ``note`` says so;
    - ``NVMLError_LibRmVersionMismatch`` (``NVML_ERROR_LIB_RM_VERSION_MISMATCH``: the user-space
      library and the loaded kernel module differ, typically after a driver update without a
      reboot): ``error`` = :data:`DRIVER_MISMATCH_EXPLANATION`, ``error_kind`` ``driver_mismatch``;
    - ``NVMLError_DriverNotLoaded``, ``NVMLError_NoPermission``, any other ``NVMLError``, a timeout:
      ``error`` explains, GPUs are not used.
    """
    started = time.monotonic()
    try:
        import pynvml
    except ImportError:
        return GpuProbe(error="nvidia-ml-py is not installed, so NVIDIA GPUs cannot be probed (pip install nvidia-ml-py)",
                        error_kind="no_binding", elapsed_s=time.monotonic() - started)

    def is_kind(exc: BaseException, cls_name: str, code_name: str) -> bool:
        cls = getattr(pynvml, cls_name, None)
        if cls is not None and isinstance(exc, cls):
            return True
        code = getattr(pynvml, code_name, None)
        return code is not None and getattr(exc, "value", None) == code

    try:
        driver, cuda, gpus = _call_with_timeout(lambda: _nvml_read(pynvml), timeout, "NVML")
    except ProbeTimeout:
        return GpuProbe(error=f"NVML did not answer within {timeout:g} s (a hung driver?): GPUs are not used; "
                              "check nvidia-smi, or run with --backend cpu",
                        error_kind="timeout", elapsed_s=time.monotonic() - started)
    except pynvml.NVMLError as exc:
        elapsed = time.monotonic() - started
        if is_kind(exc, "NVMLError_LibraryNotFound", "NVML_ERROR_LIBRARY_NOT_FOUND"):
            return GpuProbe(note=f"no NVIDIA driver library (libnvidia-ml.so.1) found, NVML: {exc}", elapsed_s=elapsed)
        if is_kind(exc, "NVMLError_LibRmVersionMismatch", "NVML_ERROR_LIB_RM_VERSION_MISMATCH"):
            return GpuProbe(error=DRIVER_MISMATCH_EXPLANATION, error_kind="driver_mismatch", elapsed_s=elapsed)
        if is_kind(exc, "NVMLError_DriverNotLoaded", "NVML_ERROR_DRIVER_NOT_LOADED"):
            return GpuProbe(error=f"the NVIDIA driver library is installed but the driver is not loaded ({exc}): "
                                  "no usable GPU; load the driver (or reboot), or run with --backend cpu",
                            error_kind="driver_not_loaded", elapsed_s=elapsed)
        if is_kind(exc, "NVMLError_NoPermission", "NVML_ERROR_NO_PERMISSION"):
            return GpuProbe(error=f"no permission to use the NVIDIA devices ({exc}): check /dev/nvidia* access "
                                  "(container --gpus flag?), or run with --backend cpu",
                            error_kind="no_permission", elapsed_s=elapsed)
        return GpuProbe(error=f"NVML failed: {exc} ({type(exc).__name__}); GPUs are not used", error_kind="nvml",
                        elapsed_s=elapsed)
    return GpuProbe(gpus=gpus, driver_version=driver, cuda_driver_version=cuda,
                    elapsed_s=time.monotonic() - started)


_TORCH_CUDA_RE = re.compile(r"^cuda\s*(?::[^=\n]*)?=\s*(?:'([^']*)'|\"([^\"]*)\"|(None))", re.M)
_TORCH_HIP_RE = re.compile(r"^hip\s*(?::[^=\n]*)?=\s*(?:'([^']*)'|\"([^\"]*)\"|(None))", re.M)


def _cu_tag(tag: str) -> str | None:
    """``cu121`` -> ``12.1``, ``cu128`` -> ``12.8``, ``cu130`` -> ``13.0``."""
    m = re.fullmatch(r"cu(\d{2,3})", tag)
    if not m:
        return None
    digits = m.group(1)
    return f"{int(digits[:-1])}.{digits[-1]}"


def torch_build(dist: Any) -> tuple[str, str | None, str]:
    """How a torch distribution was built, without importing torch: ``(build, cuda, detail)``.

    Reads, in order: ``torch/version.py`` (``cuda = '12.4'`` / ``cuda = None`` / ``hip = ...``),
    the local version tag (``2.5.1+cu121``, ``2.5.1+cpu``), the ``nvidia-cuda-runtime-cu12``
    requirement of the PyPI Linux wheels.
    """
    try:
        text = open(str(dist.locate_file("torch/version.py")), encoding="utf-8").read()
    except OSError:
        text = ""
    if text:
        m = _TORCH_CUDA_RE.search(text)
        h = _TORCH_HIP_RE.search(text)
        cuda = (m.group(1) or m.group(2)) if m else None
        hip = (h.group(1) or h.group(2)) if h else None
        if cuda:
            return "cuda", cuda, "torch/version.py"
        if hip:
            return "rocm", None, f"torch/version.py: hip = {hip}"
        if m and m.group(3):
            return "cpu", None, "torch/version.py: cuda = None"
    version = dist.version or ""
    if "+" in version:
        local = version.split("+", 1)[1]
        if local == "cpu" or local.startswith("cpu"):
            return "cpu", None, f"version tag +{local}"
        if local.startswith("rocm"):
            return "rocm", None, f"version tag +{local}"
        cu = _cu_tag(local)
        if cu:
            return "cuda", cu, f"version tag +{local}"
    for req in dist.requires or []:
        m2 = re.match(r"nvidia-cuda-runtime-cu(\d+)", req)
        if m2:
            return "cuda", m2.group(1), f"requires {req.split(';')[0].strip()}"
    return "unknown", None, "no torch/version.py, no local version tag, no nvidia-* requirement"


def probe_engines(names: tuple[str, ...] = ENGINE_DISTRIBUTIONS) -> dict[str, EngineInfo]:
    """Installed versions of the inference engines and their companions, from package metadata
    (``importlib.metadata``) only: nothing is imported, so a broken CUDA install cannot crash
    the probe (and an install that imports badly is not detected here).

    Returns ``{distribution name: EngineInfo}`` for every name in ``names``; torch also gets its
    build (see :func:`torch_build`), onnxruntime-gpu the build ``cuda``.
    """
    from importlib import metadata

    out: dict[str, EngineInfo] = {}
    for name in names:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            out[name] = EngineInfo(name=name, installed=False)
            continue
        info = EngineInfo(name=name, installed=True, version=dist.version)
        if name == "torch":
            info.build, info.cuda, info.detail = torch_build(dist)
        elif name == "onnxruntime-gpu":
            info.build = "cuda"
        out[name] = info
    return out


def models_url(server_url: str) -> str:
    """``http://h:30000/`` or ``http://h:30000/v1`` -> ``http://h:30000/v1/models`` (MinerU strips a
    trailing ``/v1`` from ``model.vlm.server_url`` the same way, mineru/config.py VlmConfig)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(server_url.strip())
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[:-3]
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    # user:password@ is sent as a Basic Authorization header (urllib cannot take it in the URL);
    # the query string stays after the path
    return urlunsplit((parts.scheme, netloc, f"{path}/v1/models", parts.query, ""))


def _basic_auth(server_url: str) -> str | None:
    """``Basic ...`` header value for a URL's ``user:password@``, else None."""
    import base64
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(server_url.strip())
    if not parts.username:
        return None
    cred = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
    return "Basic " + base64.b64encode(cred).decode()


def _fetch_models(url: str, timeout: float, api_key: str | None, basic: str | None = None) -> RemoteProbe:
    import json
    import socket
    import urllib.error
    import urllib.request

    headers = {"Accept": "application/json"}
    if basic:
        headers["Authorization"] = basic
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    req = urllib.request.Request(url, headers=headers, method="GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - user-given server URL
            status = resp.status
            body = resp.read(1_000_000)
    except urllib.error.HTTPError as exc:
        hint = " (set MINERU_MODEL_VLM_API_KEY or model.vlm.api_key)" if exc.code in (401, 403) else ""
        return RemoteProbe(url=url, reachable=True, status=exc.code, error=f"server answered HTTP {exc.code} {exc.reason}{hint}")
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, (socket.timeout, TimeoutError)):
            return RemoteProbe(url=url, error=f"no answer from {url} within {timeout:g} s")
        return RemoteProbe(url=url, error=f"cannot connect to {url}: {reason}")
    except (socket.timeout, TimeoutError):
        return RemoteProbe(url=url, error=f"no answer from {url} within {timeout:g} s")
    except (OSError, ValueError) as exc:
        return RemoteProbe(url=url, error=f"cannot query {url}: {exc}")
    try:
        data = json.loads(body)
        entries = data.get("data")
        if not isinstance(entries, list):
            raise ValueError("no 'data' list")
        models = [str(e["id"]) for e in entries if isinstance(e, dict) and e.get("id")]
    except (ValueError, AttributeError) as exc:
        return RemoteProbe(url=url, reachable=True, status=status,
                           error=f"the answer is not an OpenAI /v1/models list ({exc})")
    return RemoteProbe(url=url, reachable=True, status=status, models=models)


def probe_remote(server_url: str, timeout: float = 5.0, *, api_key: str | None = None) -> RemoteProbe:
    """``GET {server_url}/v1/models`` of an OpenAI-compatible server (stdlib urllib; proxies from
    the environment apply as they do for MinerU's httpx client).

    Returns a :class:`RemoteProbe`; never raises. The whole call is limited to about ``timeout``
    seconds (socket timeout plus a thread limit of ``timeout + 1``).
    """
    started = time.monotonic()
    url = models_url(server_url)
    basic = _basic_auth(server_url)
    try:
        probe = _call_with_timeout(lambda: _fetch_models(url, timeout, api_key, basic), timeout + 1.0, "remote server")
    except ProbeTimeout:
        probe = RemoteProbe(url=url, error=f"no answer from {url} within {timeout:g} s")
    probe.elapsed_s = time.monotonic() - started
    return probe


def read_mineru_vlm_settings(environ=None) -> VlmSettings:
    """MinerU's ``model.vlm`` server settings: the ``MINERU_MODEL_VLM_*`` variables, else
    ``$MINERU_HOME/config.yaml`` through ``mineru.config`` (imported lazily, about 0.35-0.7 s), plus
    the legacy ``MINERU_VL_MODEL_NAME`` / ``MINERU_VL_API_KEY`` that MinerU's HTTP client still
    reads (mineru_vl_utils/vlm_client/http_client.py).

    With no configuration file (``models.mineru_config_file``) and no ``MINERU_MODEL_VLM_*``
    variable, MinerU's values are its defaults (``VlmConfig``: empty server URL, model and key;
    mineru/config.py 4.0.12): they are taken without importing ``mineru.config``."""
    env = os.environ if environ is None else environ
    vs = VlmSettings(server_url=env.get("MINERU_MODEL_VLM_SERVER_URL", ""), model=env.get("MINERU_MODEL_VLM_MODEL", ""),
                     api_key=env.get("MINERU_MODEL_VLM_API_KEY", ""), source="env")
    from ..models import mineru_config_file, mineru_home

    if mineru_config_file(env) is None and not any(k.startswith("MINERU_MODEL_VLM") for k in env):
        vs.source = (f"MinerU defaults: no {os.path.join(mineru_home(env), 'config.yaml')} "
                     "and no MINERU_MODEL_VLM_* variable")
        vs.model = env.get("MINERU_VL_MODEL_NAME", "")
        vs.api_key = env.get("MINERU_VL_API_KEY", "").strip()
        return vs
    try:
        from mineru.config import config, get_config_file_path

        vlm = config.model.vlm
        vs = VlmSettings(server_url=vlm.server_url, model=vlm.model, api_key=vlm.api_key,
                         source=f"MinerU configuration ({get_config_file_path()} and MINERU_MODEL_VLM_* variables)")
    except Exception:  # noqa: BLE001 - mineru missing or its config invalid: the env values stand
        pass
    vs.model = vs.model or env.get("MINERU_VL_MODEL_NAME", "")
    vs.api_key = vs.api_key or env.get("MINERU_VL_API_KEY", "").strip()
    return vs


def probe_machine(
    settings: Any,
    *,
    gpu_probe: Callable[[], GpuProbe] = probe_gpus,
    engine_probe: Callable[[], dict[str, EngineInfo]] = probe_engines,
    remote_probe: Callable[..., RemoteProbe] = probe_remote,
    tier_probe: Callable[..., TierModels] = tier_models,
    vlm_settings_probe: Callable[[], VlmSettings] = read_mineru_vlm_settings,
    cpus: int | None = None,
    memory_available: int | None = None,
) -> MachineProbe:
    """Run every probe for ``settings`` (a :class:`mineru_cli.settings.Settings`).

    The GPU probe always runs (doctor shows it even for ``--backend cpu``); the remote probe runs
    when a server URL is known (``--server-url``, else MinerU's own ``model.vlm.server_url``).
    Tier probes run lazily, when the decision asks. Every probe is injectable for tests.
    """
    import psutil

    mineru_vlm = vlm_settings_probe()
    gpu = gpu_probe()
    engines = engine_probe()
    server_url = settings.server_url or mineru_vlm.server_url or None
    remote = None
    if server_url:
        api_key = mineru_vlm.api_key or None
        remote = remote_probe(server_url, api_key=api_key) if api_key else remote_probe(server_url)
    return MachineProbe(
        gpu=gpu, engines=engines, remote=remote,
        cpus=cpus or _effective_cpus(),
        memory_available=memory_available if memory_available is not None else int(psutil.virtual_memory().available),
        cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
        mineru_vlm=mineru_vlm, tier_probe=tier_probe,
    )
