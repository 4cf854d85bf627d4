"""Which backend runs MinerU here: probes of the machine and the pure decision.

Flow (what ``convert`` and ``doctor`` call)::

    machine = probe_machine(settings)            # GPUs (NVML), engines, remote server, model weights
    decision = decide_backend(settings, machine)  # backend + tier + reasons, or EnvironmentProblem (exit 3)
    lanes = worker_lanes(decision, settings)      # one worker pool per lane, started with lane.env

Everything MinerU needs to know reaches it through its own configuration variables
(``MINERU_DEVICE_MODE``, ``MINERU_MODEL_VLM_ENGINE``, ``MINERU_MODEL_VLM_SERVER_URL``, ...: the
names come from ``mineru/config.py`` and ``mineru/model/runtime/device.py`` of MinerU 4.0.12); MinerU
is never patched.

The compatibility rules are data: :data:`RULES`, each with the source of the fact it encodes.

Nothing heavy is imported at module level (no pynvml, no mineru, no torch): the probes import
lazily, and the engines are read from package metadata only.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from .errors import EnvironmentProblem
from .models import TierModels, resolve_tier, tier_models

GIB = 1024**3

#: The explanation shown for NVML_ERROR_LIB_RM_VERSION_MISMATCH.
DRIVER_MISMATCH_EXPLANATION = (
    "NVIDIA driver/library version mismatch (the driver was updated without a reboot): "
    "reboot the machine, or run with --backend cpu meanwhile"
)

GPU_ENGINES: tuple[str, ...] = ("vllm", "lmdeploy")
#: ``--backend auto`` without a server URL tries these in order.
AUTO_ORDER: tuple[str, ...] = ("vllm", "lmdeploy", "cpu")
#: backend -> MinerU VLM engine name (``model.vlm.engine``); remote uses the server instead.
VLM_ENGINE_OF: dict[str, str | None] = {"vllm": "vllm", "lmdeploy": "lmdeploy", "cpu": "llama-cpp", "remote": None}

#: Distributions read by :func:`probe_engines` (package metadata only, never imported).
ENGINE_DISTRIBUTIONS: tuple[str, ...] = (
    "mineru", "mineru-llama-cpp", "vllm", "lmdeploy", "qwen-vl-utils", "torch", "torchvision",
    "transformers", "accelerate", "safetensors", "onnxruntime", "onnxruntime-gpu",
)
#: MinerU runs its small models on torch only when all of these import (mineru/model/runtime/device.py
#: TORCH_REQUIRED_MODULES), and only on a non-CPU device.
TORCH_STACK: tuple[str, ...] = ("torch", "torchvision", "transformers", "accelerate", "safetensors")

INSTALL_HINTS: dict[str, str] = {
    "vllm": "pip install 'mineru-cli[gpu]', which brings MinerU's vllm extra",
    "lmdeploy": "pip install lmdeploy qwen-vl-utils; MinerU does not install it on Linux",
}


# --------------------------------------------------------------------------------------------
# probe results
# --------------------------------------------------------------------------------------------

_ARCHITECTURES: tuple[tuple[tuple[int, int], str], ...] = (
    ((10, 0), "Blackwell"), ((9, 0), "Hopper"), ((8, 9), "Ada Lovelace"), ((8, 0), "Ampere"),
    ((7, 5), "Turing"), ((7, 0), "Volta"), ((6, 0), "Pascal"), ((0, 0), "pre-Pascal"),
)


def architecture_name(cc: tuple[int, int]) -> str:
    """NVIDIA architecture for a compute capability: (8, 6) -> 'Ampere', (12, 0) -> 'Blackwell'.

    Source: NVIDIA's CUDA GPU list (https://developer.nvidia.com/cuda-gpus): 7.0 Volta, 7.5 Turing,
    8.0/8.6/8.7 Ampere, 8.9 Ada Lovelace, 9.0 Hopper, 10.x/11.x/12.x Blackwell (12.x: consumer/workstation).
    """
    for floor, name in _ARCHITECTURES:
        if tuple(cc) >= floor:
            return name
    return "unknown"


@dataclass
class GpuInfo:
    """One NVIDIA GPU as NVML sees it.

    ``index`` is NVML's index (the order of ``nvidia-smi``; PCI bus order), ``compute_capability``
    is ``(major, minor)``, memory in bytes. ``error`` is set when NVML could not read this GPU
    (it is then never used).
    """

    index: int
    name: str
    compute_capability: tuple[int, int]
    memory_total: int
    memory_free: int
    uuid: str = ""
    mig_enabled: bool = False
    error: str | None = None

    @property
    def cc(self) -> str:
        """Compute capability as text, ``"8.6"``."""
        return f"{self.compute_capability[0]}.{self.compute_capability[1]}"

    @property
    def architecture(self) -> str:
        return architecture_name(self.compute_capability)

    def label(self) -> str:
        """``GPU 0 (NVIDIA A100-SXM4-80GB, Ampere, cc 8.0)``"""
        return f"GPU {self.index} ({self.name}, {self.architecture}, cc {self.cc})"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["compute_capability"] = self.cc
        d["architecture"] = self.architecture
        return d


@dataclass
class GpuProbe:
    """What NVML reported.

    ``gpus`` empty with ``error`` None means "no GPU" (including: no NVIDIA library at all, see
    ``note``). ``error`` set means GPUs may exist but cannot be used (driver/library mismatch,
    timeout, driver not loaded, ...); ``error_kind`` is one of ``driver_mismatch``, ``timeout``,
    ``driver_not_loaded``, ``no_permission``, ``no_binding``, ``nvml``. ``driver_version`` like
    ``"550.54.15"``, ``cuda_driver_version`` like ``"12.4"`` (the newest CUDA the driver supports).
    """

    gpus: list[GpuInfo] = field(default_factory=list)
    driver_version: str | None = None
    cuda_driver_version: str | None = None
    error: str | None = None
    error_kind: str | None = None
    note: str | None = None
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "gpus": [g.to_dict() for g in self.gpus], "driver_version": self.driver_version,
            "cuda_driver_version": self.cuda_driver_version, "error": self.error, "error_kind": self.error_kind,
            "note": self.note, "elapsed_s": round(self.elapsed_s, 3),
        }


@dataclass
class EngineInfo:
    """One installed (or absent) distribution, from package metadata, never imported.

    For torch: ``build`` is ``cuda``, ``cpu``, ``rocm`` or ``unknown`` and ``cuda`` the CUDA version
    of the build (``"12.8"``; ``"12"`` when only the major is known); ``detail`` says how it was read.
    """

    name: str
    installed: bool
    version: str | None = None
    build: str | None = None
    cuda: str | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RemoteProbe:
    """The answer of ``GET {server}/v1/models`` of an OpenAI-compatible server.

    ``reachable``: a TCP connection and an HTTP answer happened (any status). ``status``: the HTTP
    status or None. ``models``: the ``id`` of every entry of ``data``. ``error``: why it is not
    usable (None when status 200 and the JSON was read).
    """

    url: str
    reachable: bool = False
    status: int | None = None
    models: list[str] = field(default_factory=list)
    error: str | None = None
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.reachable and self.status == 200 and self.error is None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["elapsed_s"] = round(self.elapsed_s, 3)
        d["ok"] = self.ok
        return d


@dataclass
class VlmSettings:
    """MinerU's own VLM connection settings (``model.vlm.*`` from ``MINERU_MODEL_VLM_*`` variables
    or ``$MINERU_HOME/config.yaml``), as far as they matter for the decision."""

    server_url: str = ""
    model: str = ""
    api_key: str = ""
    source: str = "default"


@dataclass
class MachineProbe:
    """Every probe of this machine, bundled. Build it with :func:`probe_machine`.

    ``cpus``: usable cores; ``memory_available``: bytes; ``cuda_visible_devices``: the variable as
    it was when probed (None: unset). ``tier_probe(tier, vlm_engine=, server_url=, small_backend=)
    -> TierModels`` asks MinerU's model registry; results are cached per argument set.
    """

    gpu: GpuProbe
    engines: dict[str, EngineInfo]
    remote: RemoteProbe | None = None
    cpus: int = 1
    memory_available: int = 0
    cuda_visible_devices: str | None = None
    mineru_vlm: VlmSettings = field(default_factory=VlmSettings)
    tier_probe: Callable[..., TierModels] = field(default=tier_models, repr=False)
    _tier_cache: dict[tuple, TierModels] = field(default_factory=dict, repr=False)

    def engine(self, name: str) -> EngineInfo:
        """The :class:`EngineInfo` of a distribution (absent ones read as not installed)."""
        return self.engines.get(name) or EngineInfo(name=name, installed=False)

    def installed(self, name: str) -> bool:
        return self.engine(name).installed

    def tier_status(self, tier: str, *, vlm_engine: str | None = None, server_url: str | None = None,
                    small_backend: str | None = None) -> TierModels:
        """Model weights for ``tier`` (cached). Raises what the tier probe raises."""
        key = (tier, vlm_engine, server_url, small_backend)
        if key not in self._tier_cache:
            self._tier_cache[key] = self.tier_probe(tier, vlm_engine=vlm_engine, server_url=server_url,
                                                    small_backend=small_backend)
        return self._tier_cache[key]

    def to_dict(self) -> dict[str, Any]:
        return {
            "gpu": self.gpu.to_dict(),
            "engines": {k: v.to_dict() for k, v in self.engines.items()},
            "remote": self.remote.to_dict() if self.remote else None,
            "cpus": self.cpus,
            "memory_available": self.memory_available,
            "cuda_visible_devices": self.cuda_visible_devices,
            "mineru_vlm": {"server_url": self.mineru_vlm.server_url, "model": self.mineru_vlm.model,
                           "api_key_set": bool(self.mineru_vlm.api_key), "source": self.mineru_vlm.source},
        }


# --------------------------------------------------------------------------------------------
# probes
# --------------------------------------------------------------------------------------------

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
    from .models import mineru_config_file, mineru_home

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


def _effective_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# --------------------------------------------------------------------------------------------
# compatibility rules (data)
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CompatRule:
    """One compatibility fact about an engine on a GPU.

    A rule applies to a (engine, GPU) pair when the engine is in ``engines`` and EVERY condition
    that is set holds:

    - ``cc_at_least`` / ``cc_below``: the GPU's compute capability ``(major, minor)``;
    - ``engine_below`` / ``engine_at_least``: the engine's installed version (PEP 440);
    - ``missing``: this distribution is not installed;
    - ``torch_without_cuda``: torch is installed and its build has no CUDA;
    - ``torch_cuda_below``: torch's CUDA build is known and older than this;
    - ``torch_cuda_newer_than_driver``: torch's CUDA major is above the driver's CUDA major;
    - ``min_free_bytes`` / ``min_free_fraction``: the GPU's free memory is below
      ``max(min_free_bytes, min_free_fraction * total)``;
    - ``mig_enabled``: MIG mode is on.

    ``effect``: ``reject`` (the engine cannot use this GPU), ``warn`` (usable, with a warning) or
    ``env`` (usable; ``env`` pairs are set in that GPU's worker environment). ``message`` is a
    ``str.format`` template over: engine, version, gpu, cc, arch, free, total, need, torch,
    torch_cuda, driver, driver_cuda. ``source`` says where the fact comes from.
    """

    id: str
    engines: tuple[str, ...]
    effect: str
    message: str
    source: str
    cc_at_least: tuple[int, int] | None = None
    cc_below: tuple[int, int] | None = None
    engine_below: str | None = None
    engine_at_least: str | None = None
    missing: str | None = None
    torch_without_cuda: bool = False
    torch_cuda_below: str | None = None
    torch_cuda_newer_than_driver: bool = False
    min_free_bytes: int | None = None
    min_free_fraction: float | None = None
    mig_enabled: bool = False
    env: tuple[tuple[str, str], ...] = ()


RULES: tuple[CompatRule, ...] = (
    CompatRule(
        id="engine-needs-torch", engines=("vllm", "lmdeploy"), effect="reject", missing="torch",
        message="{engine} {version} is installed but torch is not: the install is broken (reinstall {engine})",
        source="vllm and lmdeploy declare torch as a dependency in their package metadata",
    ),
    CompatRule(
        id="torch-cpu-build", engines=("vllm", "lmdeploy"), effect="reject", torch_without_cuda=True,
        message="the installed torch {torch} is not a CUDA build, so {engine} cannot run on an NVIDIA GPU",
        source="torch/version.py 'cuda = None' (or a '+cpu' version tag) marks a build without CUDA kernels",
    ),
    CompatRule(
        id="cuda-major-newer-than-driver", engines=("vllm", "lmdeploy"), effect="reject",
        torch_cuda_newer_than_driver=True,
        message="torch {torch} is built for CUDA {torch_cuda}, but NVIDIA driver {driver} supports CUDA {driver_cuda} "
                "at most: update the driver, or install a torch/{engine} built for CUDA {driver_cuda}",
        source="NVIDIA CUDA Compatibility guide, Minor Version Compatibility "
               "(https://docs.nvidia.com/deploy/cuda-compatibility/minor-version-compatibility.html): an application "
               "built with CUDA 12.x runs on any driver >= 525, one built with 13.x needs >= 580; across a major "
               "version only the forward-compatibility package helps",
    ),
    CompatRule(
        id="blackwell-needs-cuda-12.8", engines=("vllm", "lmdeploy"), effect="reject", cc_at_least=(10, 0),
        torch_cuda_below="12.8",
        message="Blackwell GPUs (cc {cc}) need torch built for CUDA >= 12.8; the installed torch {torch} is built "
                "for CUDA {torch_cuda} ('no kernel image is available for execution on the device')",
        source="vllm-project/vllm#13306 (RTX 5090 sm_120: 'not compatible with the current PyTorch installation', "
               "torch builds before cu128 ship sm_50..sm_90 only); vLLM's CUDA install notes, quoted in "
               "vllm-project/vllm#38869: Blackwell requires CUDA >= 12.8",
    ),
    CompatRule(
        id="blackwell-needs-vllm-0.11", engines=("vllm",), effect="reject", cc_at_least=(10, 0), engine_below="0.11",
        message="vllm {version} is older than 0.11: on Blackwell GPUs (cc {cc}) such builds fail at engine start "
                "(flash-attention 'CUDA error: invalid argument', 'Engine core initialization failed'); "
                "install vllm >= 0.11",
        source="opendatalab/MinerU#3582 (RTX 5090, vllm 0.10.1.1: 'Engine core initialization failed'; "
               "reported working with vllm 0.11); vllm-project/vllm#24383 (RTX PRO 6000, SM120, vllm 0.10.2rc1: "
               "'CUDA error: invalid argument' while loading); Dao-AILab/flash-attention#1763 "
               "(flash_fwd_launch_template.h: invalid argument on sm_120 under vLLM); mineru-cli issue 4",
    ),
    CompatRule(
        id="pre-ampere-not-in-vllm-v1", engines=("vllm",), effect="reject", cc_below=(8, 0),
        message="vLLM's current engine (V1) does not support {arch} GPUs (cc {cc} < 8.0): use lmdeploy "
                "(turbomind) or the CPU",
        source="vllm-project/vllm#15853 ('[V1] Tesla T4 cannot work for V1'); opendatalab/MinerU#3909 (V100, "
               "vllm 0.10.2: MinerU's vllm async engine fails); vllm-project/vllm#29743 (Turing support in "
               "Qwen2/3-VL attention backends, open). Conservative: MinerU's own Dockerfile (docker/global) names "
               "7.0 <= cc <= 12.1 for its vLLM 0.21 image, and engine_utils.py enables its logits processors below "
               "8.0 with vllm >= 0.10.2; not verified on pre-Ampere hardware here",
    ),
    CompatRule(
        id="mineru-logits-processors-8.0", engines=("vllm",), effect="warn", cc_at_least=(8, 0), engine_below="0.10.1",
        message="vllm {version} < 0.10.1: MinerU disables its custom logits processors on this GPU "
                "(vllm >= 0.10.1 enables them at cc >= 8.0)",
        source="mineru/model/vlm/engine_utils.py enable_custom_logits_processors (MinerU 4.0.12)",
    ),
    CompatRule(
        id="mineru-logits-processors-below-8.0", engines=("vllm",), effect="warn", cc_below=(8, 0),
        engine_below="0.10.2",
        message="vllm {version} < 0.10.2: MinerU disables its custom logits processors below cc 8.0",
        source="mineru/model/vlm/engine_utils.py enable_custom_logits_processors (MinerU 4.0.12)",
    ),
    CompatRule(
        id="vllm-free-memory", engines=("vllm",), effect="reject", min_free_bytes=8 * GIB, min_free_fraction=0.10,
        message="{gpu} has {free} free of {total}; vllm needs {need} free here (MinerU asks vLLM for "
                "max(6 GB, 10 % of the GPU), and vLLM refuses to start with less free)",
        source="MinerU sets vLLM's gpu_memory_utilization to max(6 GB / total, 0.1) on GPUs over 8 GB "
               "(mineru/model/vlm/engine_utils.py set_default_gpu_memory_utilization); vLLM's V1 worker stops "
               "with 'Free memory on device ... on startup is less than desired GPU memory utilization' "
               "(vllm/v1/worker/gpu_worker.py, vllm-project/vllm#20305). The 8 GiB floor adds about 2 GiB for the "
               "CUDA context and MinerU's torch small models on the same GPU: an estimate, not measured; MinerU's "
               "README asked for at least 8 GB of GPU memory for its GPU engines (opendatalab/MinerU#2993)",
    ),
    CompatRule(
        id="lmdeploy-free-memory", engines=("lmdeploy",), effect="reject", min_free_bytes=8 * GIB,
        message="{gpu} has {free} free of {total}; lmdeploy needs {need} free here",
        source="estimate, not measured: MinerU's README asked for at least 8 GB of GPU memory for its GPU "
               "engines (opendatalab/MinerU#2993); lmdeploy sizes its KV cache as a fraction of the FREE memory "
               "(cache_max_entry_count, set by MinerU's set_default_gpu_memory_utilization), so no total-based floor",
    ),
    CompatRule(
        id="lmdeploy-needs-qwen-vl-utils", engines=("lmdeploy",), effect="reject", missing="qwen-vl-utils",
        message="MinerU's lmdeploy engine also needs qwen-vl-utils, which is not installed (pip install qwen-vl-utils)",
        source="mineru/model/vlm/selector.py VLM_REQUIRED_MODULES['lmdeploy'] = ('lmdeploy', 'qwen_vl_utils')",
    ),
    CompatRule(
        id="lmdeploy-pre-volta", engines=("lmdeploy",), effect="reject", cc_below=(7, 0),
        message="lmdeploy does not support {arch} GPUs (cc {cc} < 7.0)",
        source="lmdeploy installation docs (https://lmdeploy.readthedocs.io/en/v0.7.1/get_started/installation.html): "
               "Volta sm70, Turing sm75, Ampere sm80/86, Ada sm89",
    ),
    CompatRule(
        id="lmdeploy-turbomind-below-8.0", engines=("lmdeploy",), effect="env", cc_below=(8, 0),
        env=(("MINERU_LMDEPLOY_BACKEND", "turbomind"),),
        message="lmdeploy runs its turbomind backend on {arch} (cc {cc} < 8.0)",
        source="mineru/model/vlm/engine_utils.py set_lmdeploy_backend (Linux, CUDA: pytorch at cc >= 8.0, "
               "turbomind below); MINERU_LMDEPLOY_BACKEND is read by mineru/model/vlm/runtime.py",
    ),
    CompatRule(
        id="lmdeploy-pytorch-from-8.0", engines=("lmdeploy",), effect="env", cc_at_least=(8, 0),
        env=(("MINERU_LMDEPLOY_BACKEND", "pytorch"),),
        message="lmdeploy runs its pytorch backend on {arch} (cc {cc} >= 8.0)",
        source="mineru/model/vlm/engine_utils.py set_lmdeploy_backend (Linux, CUDA: pytorch at cc >= 8.0)",
    ),
    CompatRule(
        id="mig-enabled", engines=("vllm", "lmdeploy"), effect="warn", mig_enabled=True,
        message="{gpu} has MIG mode enabled: mineru-cli pins whole GPUs by index; with MIG, CUDA addresses "
                "instances as MIG-<UUID> and the memory figures here are the whole GPU's (untested)",
        source="CUDA programming guide, environment variables: CUDA_VISIBLE_DEVICES accepts MIG-<GPU-UUID>/... "
               "for MIG instances",
    ),
)


def _version(text: str | None) -> Any:
    from packaging.version import InvalidVersion, Version

    if not text:
        return None
    try:
        return Version(text)
    except InvalidVersion:
        m = re.match(r"\d+(\.\d+)*", text)
        return Version(m.group(0)) if m else None


def _fmt_bytes(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


@dataclass
class RuleOutcome:
    """What :data:`RULES` say about one engine on one GPU."""

    rejections: list[tuple[CompatRule, str]] = field(default_factory=list)
    warnings: list[tuple[CompatRule, str]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def evaluate_rules(engine: str, gpu: GpuInfo, machine: MachineProbe,
                   rules: tuple[CompatRule, ...] = RULES) -> RuleOutcome:
    """Apply ``rules`` to ``engine`` on ``gpu``; see :class:`CompatRule` for the semantics."""
    eng = machine.engine(engine)
    torch = machine.engine("torch")
    ev = _version(eng.version)
    tcuda = _version(torch.cuda) if torch.installed and torch.build == "cuda" and torch.cuda else None
    dcuda = _version(machine.gpu.cuda_driver_version)
    ctx = {
        "engine": engine, "version": eng.version or "?", "gpu": gpu.label(), "cc": gpu.cc, "arch": gpu.architecture,
        "free": _fmt_bytes(gpu.memory_free), "total": _fmt_bytes(gpu.memory_total), "need": "",
        "torch": torch.version or "(none)", "torch_cuda": torch.cuda or "?",
        "driver": machine.gpu.driver_version or "?", "driver_cuda": machine.gpu.cuda_driver_version or "?",
    }
    out = RuleOutcome()
    for rule in rules:
        if engine not in rule.engines:
            continue
        if rule.cc_at_least is not None and not tuple(gpu.compute_capability) >= rule.cc_at_least:
            continue
        if rule.cc_below is not None and not tuple(gpu.compute_capability) < rule.cc_below:
            continue
        if rule.engine_below is not None and not (ev is not None and ev < _version(rule.engine_below)):
            continue
        if rule.engine_at_least is not None and not (ev is not None and ev >= _version(rule.engine_at_least)):
            continue
        if rule.missing is not None and machine.installed(rule.missing):
            continue
        if rule.torch_without_cuda and not (torch.installed and torch.build in ("cpu", "rocm")):
            continue
        if rule.torch_cuda_below is not None and not (tcuda is not None and tcuda < _version(rule.torch_cuda_below)):
            continue
        if rule.torch_cuda_newer_than_driver and not (
                tcuda is not None and dcuda is not None and tcuda.major > dcuda.major):
            continue
        if rule.mig_enabled and not gpu.mig_enabled:
            continue
        if rule.min_free_bytes is not None or rule.min_free_fraction is not None:
            need = max(rule.min_free_bytes or 0, (rule.min_free_fraction or 0.0) * gpu.memory_total)
            if gpu.memory_free >= need:
                continue
            ctx["need"] = _fmt_bytes(need)
        text = rule.message.format(**ctx)
        if rule.effect == "reject":
            out.rejections.append((rule, text))
        elif rule.effect == "warn":
            out.warnings.append((rule, text))
        elif rule.effect == "env":
            out.env.update(dict(rule.env))
            out.notes.append(text)
    return out


# --------------------------------------------------------------------------------------------
# decision
# --------------------------------------------------------------------------------------------

@dataclass
class BackendDecision:
    """How convert will run MinerU.

    - ``backend``: ``vllm`` | ``lmdeploy`` | ``cpu`` | ``remote`` (``none`` only in a non-strict
      decision that failed, see ``problems``);
    - ``vlm_engine``: MinerU's ``model.vlm.engine`` (``vllm`` | ``lmdeploy`` | ``llama-cpp``), None for remote;
    - ``gpus``: NVML indices used (one worker each), empty for cpu/remote;
    - ``reasons``: why this choice, in words; ``rejected``: alternative -> why not; ``warnings``;
    - ``tier`` / ``tier_reason``: the tier convert runs (``--tier auto`` resolved);
    - ``small_backend``: ``onnx`` | ``torch`` (MinerU's ``model.small_backend``);
    - ``server_url``: for remote; ``gpu_env``: extra worker variables per GPU index (rules with effect env);
    - ``problems``: why convert would not run (only filled by ``decide_backend(..., strict=False)``;
      ``vlm_engine``/``small_backend`` then name the first usable backend whose tier failed, if any).
    """

    backend: str
    vlm_engine: str | None
    gpus: list[int] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    requested: str = "auto"
    tier: str | None = None
    tier_reason: str = ""
    small_backend: str = "onnx"
    server_url: str | None = None
    gpu_env: dict[int, dict[str, str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.backend != "none"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["gpu_env"] = {str(k): v for k, v in self.gpu_env.items()}
        d["ok"] = self.ok
        return d


@dataclass
class _Option:
    ok: bool
    why: str = ""
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    gpus: list[int] = field(default_factory=list)
    gpu_env: dict[int, dict[str, str]] = field(default_factory=dict)
    small_backend: str = "onnx"


class _DecisionFailed(EnvironmentProblem):
    def __init__(self, message: str, decision: BackendDecision):
        super().__init__(message)
        self.decision = decision


def _gpu_summary(machine: MachineProbe) -> str:
    g = machine.gpu
    head = f"NVIDIA driver {g.driver_version or '?'} (CUDA {g.cuda_driver_version or '?'})"
    return f"{head}, {len(g.gpus)} GPU(s): " + "; ".join(
        f"{x.label()}, {_fmt_bytes(x.memory_free)} free of {_fmt_bytes(x.memory_total)}" for x in g.gpus)


def _candidate_gpus(settings: Any, machine: MachineProbe) -> tuple[list[GpuInfo], str | None, list[str]]:
    """GPUs the GPU engines may use: ``(gpus, why none, notes)``."""
    g = machine.gpu
    if g.error:
        return [], g.error, []
    if not g.gpus:
        return [], "no NVIDIA GPU found" + (f" ({g.note})" if g.note else ""), []
    notes: list[str] = []
    gpus = [x for x in g.gpus if x.error is None]
    for bad in (x for x in g.gpus if x.error):
        notes.append(f"GPU {bad.index} not used: {bad.error}")
    present = {x.index for x in g.gpus}
    if settings.gpus is not None:
        unknown = sorted(set(settings.gpus) - present)
        if unknown:
            return [], (f"--gpus names GPU(s) {', '.join(map(str, unknown))} that do not exist "
                        f"(NVML sees {', '.join(map(str, sorted(present)))})"), notes
        gpus = [x for x in gpus if x.index in set(settings.gpus)]
        notes.append(f"--gpus {','.join(map(str, settings.gpus))} restricts the GPUs considered")
    elif machine.cuda_visible_devices is not None:
        raw = machine.cuda_visible_devices.strip()
        items = [p.strip() for p in raw.split(",") if p.strip()]
        visible: list[GpuInfo] = []
        for item in items:
            if item.lstrip("-").isdigit():
                if int(item) < 0:
                    break  # CUDA stops at the first invalid index
                visible += [x for x in gpus if x.index == int(item)]
            else:
                visible += [x for x in gpus if x.uuid and x.uuid.startswith(item)]
        gpus = [x for x in gpus if x in visible]
        notes.append(f"CUDA_VISIBLE_DEVICES={raw!s} restricts the GPUs considered "
                     "(read as nvidia-smi indices or UUIDs; use --gpus to choose explicitly)")
        if not gpus:
            return [], f"CUDA_VISIBLE_DEVICES={raw!r} hides every GPU", notes
    if not gpus:
        return [], "no readable NVIDIA GPU", notes
    return gpus, None, notes


def _small_backend_for_gpu(machine: MachineProbe) -> str:
    torch = machine.engine("torch")
    if all(machine.installed(n) for n in TORCH_STACK) and torch.build == "cuda":
        return "torch"
    return "onnx"


def _check_gpu_engine(engine: str, gpus: list[GpuInfo], gpu_why: str | None, machine: MachineProbe) -> _Option:
    info = machine.engine(engine)
    if not info.installed:
        return _Option(ok=False, why=f"{engine} is not installed ({INSTALL_HINTS[engine]})")
    if gpu_why:
        return _Option(ok=False, why=f"no usable NVIDIA GPU for {engine} {info.version}: {gpu_why}")
    usable: list[int] = []
    rejected: list[str] = []
    warnings: list[str] = []
    gpu_env: dict[int, dict[str, str]] = {}
    notes: list[str] = []
    for gpu in gpus:
        outcome = evaluate_rules(engine, gpu, machine)
        if outcome.rejections:
            rejected.append(f"{gpu.label()}: " + "; ".join(f"{t} [rule {r.id}]" for r, t in outcome.rejections))
            continue
        usable.append(gpu.index)
        warnings += [f"{t} [rule {r.id}]" for r, t in outcome.warnings]
        if outcome.env:
            gpu_env[gpu.index] = outcome.env
        notes += outcome.notes
    if not usable:
        return _Option(ok=False, why=f"{engine} {info.version} cannot use any GPU: " + " | ".join(rejected))
    small = _small_backend_for_gpu(machine)
    by_index = {g.index: g for g in gpus}
    reasons = [f"{engine} {info.version} passes every rule on " + ", ".join(
        f"{by_index[i].label()} with {_fmt_bytes(by_index[i].memory_free)} free" for i in usable)]
    reasons += sorted(set(notes))
    if small == "torch":
        reasons.append("small models on the GPU with torch (torch, torchvision, transformers, accelerate, "
                       "safetensors are installed and torch is a CUDA build)")
    else:
        reasons.append("small models on the CPU with ONNX Runtime (MinerU runs them on torch only when "
                       "torch, torchvision, transformers, accelerate and safetensors are all installed "
                       "and torch is a CUDA build)")
    for text in rejected:
        warnings.append(f"not used by {engine}: {text}")
    return _Option(ok=True, reasons=reasons, warnings=warnings, gpus=usable, gpu_env=gpu_env, small_backend=small)


def _check_cpu(machine: MachineProbe) -> _Option:
    if not machine.installed("mineru"):
        return _Option(ok=False, why="mineru is not installed (pip install mineru)")
    warnings = []
    llama = machine.engine("mineru-llama-cpp")
    ort = machine.engine("onnxruntime")
    if not llama.installed:
        warnings.append("mineru-llama-cpp is not installed: tiers standard and advanced cannot run on the CPU")
    if not ort.installed:
        warnings.append("onnxruntime is not installed: tiers basic and above cannot run on the CPU")
    reasons = [f"CPU: llama.cpp (mineru-llama-cpp {llama.version or 'missing'}) for the VLM, "
               f"ONNX Runtime {ort.version or 'missing'} for the small models, {machine.cpus} core(s), "
               f"{_fmt_bytes(machine.memory_available)} memory available"]
    return _Option(ok=True, reasons=reasons, warnings=warnings, small_backend="onnx")


def _check_remote(server_url: str | None, machine: MachineProbe) -> _Option:
    if not server_url:
        return _Option(ok=False, why="no server URL (--server-url, or model.vlm.server_url in MinerU's configuration)")
    probe = machine.remote
    if probe is None:
        return _Option(ok=False, why=f"the server {server_url} was not probed")
    if not probe.ok:
        return _Option(ok=False, why=f"the VLM server {server_url} cannot be used: {probe.error}")
    configured = machine.mineru_vlm.model
    if configured:
        if configured not in probe.models:
            return _Option(ok=False, why=(f"the VLM server {server_url} does not serve the configured model "
                                          f"{configured!r} (it lists: {', '.join(probe.models) or 'nothing'})"))
        model_text = f"model {configured!r} (configured)"
    else:
        # MinerU's HTTP client takes the only model listed and fails otherwise
        # (mineru_vl_utils/vlm_client/http_client.py _get_model_name)
        if len(probe.models) != 1:
            return _Option(ok=False, why=(f"the VLM server {server_url} lists {len(probe.models)} models "
                                          f"({', '.join(probe.models) or 'none'}); MinerU needs exactly one, or "
                                          "the name in MINERU_MODEL_VLM_MODEL"))
        model_text = f"model {probe.models[0]!r} (the only one it lists)"
    reasons = [f"the VLM server {server_url} answers {probe.url} with {model_text} in {probe.elapsed_s:.2f} s",
               "small models run locally on the CPU with ONNX Runtime"]
    return _Option(ok=True, reasons=reasons, small_backend="onnx")


def _tier_for(settings: Any, machine: MachineProbe, backend: str, option: _Option,
              server_url: str | None) -> tuple[str, str]:
    vlm_engine = VLM_ENGINE_OF[backend]
    small = option.small_backend
    remote_url = server_url if backend == "remote" else None

    def probe(tier: str, vlm_engine: str | None = None, server_url: str | None = None) -> TierModels:
        return machine.tier_status(tier, vlm_engine=vlm_engine, server_url=server_url, small_backend=small)

    return resolve_tier(settings.tier, vlm_engine=vlm_engine, server_url=remote_url, probe=probe,
                        real_probe=machine.tier_probe is tier_models)


def flash_without_probing(settings: Any, needs_tier: bool) -> BackendDecision | None:
    """The decision when no probe can change it, else None (then :func:`probe_machine` and
    :func:`decide_backend`). Only with ``--backend auto`` or ``cpu`` and no ``--server-url``:

    - every input converts at flash anyway (``needs_tier`` False: Office/HTML/EPUB/CSV only), or
      ``--tier flash``;
    - ``--tier auto`` and MinerU's model folder plainly holds no weights and nothing can point
      MinerU elsewhere, server URL included (:func:`mineru_cli.models.absent_model_folder`):
      :func:`resolve_tier` answers flash, and :func:`decide_backend` then passes every GPU engine
      over for the CPU ("tier flash runs no model").

    Either way the answer is ``cpu`` at tier flash with the same reason :func:`decide_backend`
    gives; the GPU probe (NVML), the engine metadata and psutil are skipped (about 0.07 s of a
    rerun). Warnings only a probe can raise (a GPU driver problem) are not shown then;
    ``mineru-cli doctor`` shows them.
    """
    from .models import absent_model_folder, resolve_tier

    if settings.backend not in ("auto", "cpu") or settings.server_url or settings.tier not in ("auto", "flash"):
        return None
    if not needs_tier or settings.tier == "flash":
        why = ("tier flash requested (no model weights needed)" if settings.tier == "flash" and needs_tier else
               "tier flash: the inputs are Office/HTML/EPUB/CSV files, which MinerU always converts at flash")
        not_probed = "GPUs and weights not probed"
    elif absent_model_folder() is not None:
        _tier, why = resolve_tier("auto", real_probe=True)
        not_probed = "no model weights here, GPUs not probed"
    else:
        return None
    return BackendDecision(backend="cpu", vlm_engine="llama-cpp", requested=settings.backend, tier="flash",
                           tier_reason=why, reasons=[f"tier flash runs no model: CPU workers ({not_probed})"])


def decide_backend(settings: Any, machine: MachineProbe, *, strict: bool = True) -> BackendDecision:
    """Choose the backend (and the tier) for ``settings`` on ``machine``. Pure: no probing here
    except the cached tier probes of ``machine``.

    ``--backend auto``: remote when a server URL is known (``--server-url``, else MinerU's
    ``model.vlm.server_url``); else the first of vllm, lmdeploy whose engine is installed and passes
    :data:`RULES` on at least one usable GPU (``settings.gpus`` restricts them); else cpu. A GPU
    engine whose tier resolves to ``flash`` is passed over for the CPU (flash runs no model).
    The tier is then resolved for the chosen engine's weight format (:func:`resolve_tier`).

    Raises :class:`EnvironmentProblem` (exit 3) when an explicit ``--backend`` cannot work (unless
    ``settings.fallback_cpu``: then cpu with a warning), when auto with a server URL finds the server
    unusable (same fallback), and when an explicit ``--tier`` has no weights for any usable backend.
    With ``strict=False`` it does not raise: the decision comes back with ``problems`` set.
    """
    try:
        return _decide(settings, machine)
    except _DecisionFailed as exc:
        if strict:
            raise EnvironmentProblem(str(exc)) from None
        exc.decision.problems.append(str(exc))
        return exc.decision


def _decide(settings: Any, machine: MachineProbe) -> BackendDecision:
    requested = settings.backend
    server_url = settings.server_url or machine.mineru_vlm.server_url or None
    d = BackendDecision(backend="none", vlm_engine=None, requested=requested)
    gpus, gpu_why, gpu_notes = _candidate_gpus(settings, machine)
    options = {
        "remote": _check_remote(server_url, machine),
        "vllm": _check_gpu_engine("vllm", gpus, gpu_why, machine),
        "lmdeploy": _check_gpu_engine("lmdeploy", gpus, gpu_why, machine),
        "cpu": _check_cpu(machine),
    }
    if machine.gpu.error:
        d.warnings.append(machine.gpu.error)
    if machine.gpu.gpus and not machine.gpu.error:
        d.reasons.append(_gpu_summary(machine))
    elif gpu_why:
        d.reasons.append(f"GPU: {gpu_why}")

    if requested == "auto":
        order = ["remote"] if server_url else list(AUTO_ORDER)
    else:
        order = [requested]

    chosen: str | None = None
    chosen_tier: tuple[str, str] | None = None
    backend_problem: str | None = None
    tier_problem: str | None = None
    for name in order:
        opt = options[name]
        if not opt.ok:
            d.rejected[name] = opt.why
            backend_problem = backend_problem or opt.why
            continue
        try:
            tier = _tier_for(settings, machine, name, opt, server_url)
        except EnvironmentProblem as exc:
            d.rejected[name] = str(exc)
            if tier_problem is None:
                tier_problem = str(exc)
                # what doctor shows the weights for, though nothing was chosen
                d.vlm_engine, d.small_backend = VLM_ENGINE_OF[name], opt.small_backend
                d.server_url = server_url if name == "remote" else None
            continue
        if requested == "auto" and name in GPU_ENGINES and tier[0] == "flash":
            d.rejected[name] = (f"usable, but {tier[1]}; tier flash runs no model, so the GPU is not needed "
                                "and CPU workers convert faster")
            continue
        chosen, chosen_tier = name, tier
        break

    fell_back = False
    if chosen is None and backend_problem and tier_problem is None and settings.fallback_cpu and "cpu" not in order:
        opt = options["cpu"]
        try:
            chosen_tier = _tier_for(settings, machine, "cpu", opt, server_url)
            chosen, fell_back = "cpu", True
            what = f"--backend {requested}" if requested != "auto" else f"the VLM server {server_url}"
            d.warnings.append(f"{what} cannot work here ({backend_problem}); falling back to the CPU (--fallback-cpu)")
        except EnvironmentProblem as exc:
            tier_problem = str(exc)

    if chosen is None:
        if tier_problem:
            raise _DecisionFailed(tier_problem, d)
        if requested == "auto":
            raise _DecisionFailed(f"backend auto: {backend_problem}. Fix the server, drop --server-url, or add "
                                  "--fallback-cpu", d)
        raise _DecisionFailed(f"--backend {requested} cannot work here: {backend_problem}. Use --backend cpu "
                              f"(or auto), or add --fallback-cpu to fall back with a warning", d)

    opt = options[chosen]
    assert chosen_tier is not None
    d.backend = chosen
    d.vlm_engine = VLM_ENGINE_OF[chosen]
    d.gpus = list(opt.gpus)
    d.gpu_env = dict(opt.gpu_env)
    d.small_backend = opt.small_backend
    d.server_url = server_url if chosen == "remote" else None
    d.tier, d.tier_reason = chosen_tier

    d.reasons += gpu_notes if chosen in GPU_ENGINES else []
    if fell_back:
        what = f"--backend {requested}" if requested != "auto" else f"backend auto: the VLM server {server_url}"
        d.reasons.append(f"{what} cannot work here; --fallback-cpu falls back to the CPU")
    elif requested == "auto":
        if chosen == "remote":
            src = "--server-url" if settings.server_url else f"MinerU's configuration ({machine.mineru_vlm.source})"
            d.reasons.append(f"backend auto: a VLM server URL is set ({src}), so the remote server runs the VLM")
        elif chosen in GPU_ENGINES:
            d.reasons.append(f"backend auto: {chosen} is the first usable engine in the order "
                             f"{', '.join(AUTO_ORDER)}")
        else:
            d.reasons.append("backend auto: no usable GPU engine ("
                             + "; ".join(f"{k}: {v}" for k, v in d.rejected.items() if k in GPU_ENGINES) + ")")
    else:
        d.reasons.append(f"--backend {requested} requested")
    d.reasons += opt.reasons
    if chosen in GPU_ENGINES:
        d.reasons.append(f"one worker per GPU ({', '.join(map(str, d.gpus))}), pinned with CUDA_VISIBLE_DEVICES")
    d.reasons.append(d.tier_reason)
    d.warnings += opt.warnings

    if chosen in GPU_ENGINES and d.tier == "flash":
        d.warnings.append("tier flash runs no model: the GPU stays idle (--backend cpu would use every core)")
    if chosen == "remote" and d.tier == "flash":
        d.warnings.append("tier flash runs no model: the VLM server is not used")
    if chosen != "remote" and server_url and requested != "auto":
        d.warnings.append(f"the server URL {server_url} is ignored with --backend {requested}")

    for name in ("remote", "vllm", "lmdeploy", "cpu"):
        if name == chosen or name in d.rejected:
            continue
        opt2 = options[name]
        if not opt2.ok:
            d.rejected[name] = opt2.why
        elif fell_back:
            d.rejected[name] = "usable, but --fallback-cpu falls back to the CPU only"
        elif requested == "auto":
            d.rejected[name] = (f"usable, but {chosen} comes first" if name != "remote"
                                else "usable, but not chosen")
        else:
            d.rejected[name] = f"usable, but --backend {requested} was requested"
    return d


# --------------------------------------------------------------------------------------------
# worker layout
# --------------------------------------------------------------------------------------------

@dataclass
class WorkerLane:
    """One worker pool: ``workers`` processes started with ``env`` added to the environment.

    ``label`` names the lane in logs (``gpu0-vllm``, ``cpu``, ``remote``).
    """

    label: str
    env: dict[str, str]
    workers: int


def worker_lanes(decision: BackendDecision, settings: Any, *, cpus: int | None = None,
                 available_memory: int | None = None) -> list[WorkerLane]:
    """The worker layout for ``decision``.

    - GPU engines: one lane per GPU in ``decision.gpus``, 1 worker each (one model load per GPU;
      ``--workers`` does not apply, use ``--gpus``), env ``CUDA_VISIBLE_DEVICES=<index>`` with
      ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (so CUDA numbers GPUs as NVML/nvidia-smi do; CUDA's default
      is fastest first), ``MINERU_DEVICE_MODE=cuda``, ``MINERU_MODEL_VLM_ENGINE``,
      ``MINERU_MODEL_SMALL_BACKEND``, an empty ``MINERU_MODEL_VLM_SERVER_URL`` (so a server in
      MinerU's config.yaml does not override the local engine) and the rules' per-GPU variables
      (``MINERU_LMDEPLOY_BACKEND``).
    - cpu: one lane, ``settings.workers`` or :func:`mineru_cli.settings.default_workers`, env
      ``MINERU_DEVICE_MODE=cpu``, ``MINERU_MODEL_VLM_ENGINE=llama-cpp``, ``MINERU_MODEL_SMALL_BACKEND=onnx``,
      ``MINERU_TABLE_DEVICE=cpu``, ``CUDA_VISIBLE_DEVICES=`` (empty) and ONNX/torch threads per worker
      ``cores // workers`` (``MINERU_INTRA_OP_NUM_THREADS``, ``MINERU_CPU_NUM_THREADS``; MinerU's default
      is 4 per ONNX session) unless already set in the environment.
    - remote: one lane, ``settings.workers`` or ``min(settings.max_concurrency, default_workers())``,
      env ``MINERU_MODEL_VLM_SERVER_URL=<url>`` and ``MINERU_MODEL_VLM_MAX_CONCURRENCY`` =
      ``max_concurrency // workers`` (MinerU's per-process limit, so the total stays bounded), small
      models on the CPU as above.

    Variable names: mineru/config.py (``MINERU_<PATH>`` overrides ``model.vlm.engine`` etc.),
    mineru/model/runtime/device.py (``MINERU_DEVICE_MODE``), mineru/model/runtime/onnx.py
    (``MINERU_INTRA_OP_NUM_THREADS``, ``MINERU_TABLE_DEVICE``), mineru/model/vlm/runtime.py
    (``MINERU_LMDEPLOY_BACKEND``). Raises ValueError for a decision that is not ok.
    """
    from .settings import default_workers

    if not decision.ok:
        raise ValueError(f"no worker layout for a failed decision: {'; '.join(decision.problems)}")
    ncpus = cpus or _effective_cpus()
    if decision.backend in GPU_ENGINES:
        lanes = []
        for index in decision.gpus:
            env = {
                "CUDA_VISIBLE_DEVICES": str(index),
                "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
                "MINERU_DEVICE_MODE": "cuda",
                "MINERU_MODEL_VLM_ENGINE": str(decision.vlm_engine),
                "MINERU_MODEL_SMALL_BACKEND": decision.small_backend,
                "MINERU_MODEL_VLM_SERVER_URL": "",
            }
            env.update(decision.gpu_env.get(index, {}))
            lanes.append(WorkerLane(label=f"gpu{index}-{decision.backend}", env=env, workers=1))
        return lanes
    cpu_env = {
        "MINERU_DEVICE_MODE": "cpu",
        "MINERU_MODEL_SMALL_BACKEND": "onnx",
        "MINERU_TABLE_DEVICE": "cpu",
        "CUDA_VISIBLE_DEVICES": "",
    }
    if decision.backend == "cpu":
        workers = settings.workers or default_workers(available_memory, ncpus)
        env = dict(cpu_env, MINERU_MODEL_VLM_ENGINE="llama-cpp", MINERU_MODEL_VLM_SERVER_URL="")
        threads = str(max(1, ncpus // workers))
        for var in ("MINERU_INTRA_OP_NUM_THREADS", "MINERU_CPU_NUM_THREADS"):
            if var not in os.environ:
                env[var] = threads
        return [WorkerLane(label="cpu", env=env, workers=workers)]
    if decision.backend == "remote":
        workers = settings.workers or min(settings.max_concurrency, default_workers(available_memory, ncpus))
        env = dict(cpu_env, MINERU_MODEL_VLM_SERVER_URL=str(decision.server_url),
                   MINERU_MODEL_VLM_MAX_CONCURRENCY=str(max(1, settings.max_concurrency // workers)))
        return [WorkerLane(label="remote", env=env, workers=workers)]
    raise ValueError(f"unknown backend {decision.backend!r}")


def rules_table() -> list[dict[str, Any]]:
    """:data:`RULES` as plain dicts (for ``doctor --json`` and the docs)."""
    out = []
    for r in RULES:
        d = {k: v for k, v in asdict(r).items() if v not in (None, False, ())}
        out.append(d)
    return out
