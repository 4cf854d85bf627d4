"""The machine as the probes saw it: GPUs, engines, the remote server, MinerU's VLM settings.

Plain data (dataclasses with ``to_dict`` for ``doctor --json``), the names of the backends and
engines, and small pure helpers over them. Must not: probe anything (``probes``), decide
(``decision``), or import NVML, MinerU or torch.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from ..models import TierModels, tier_models

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


def _fmt_bytes(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def _effective_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
