"""The compatibility rules, as data: :data:`RULES`, each with the source of the fact it encodes,
and :func:`evaluate_rules`, which applies them to one engine on one GPU.

Must not: probe the machine or choose a backend; a new fact is a new :class:`CompatRule`, not code.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from .machine import GIB, GpuInfo, MachineProbe, _fmt_bytes


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


def rules_table() -> list[dict[str, Any]]:
    """:data:`RULES` as plain dicts (for ``doctor --json`` and the docs)."""
    out = []
    for r in RULES:
        d = {k: v for k, v in asdict(r).items() if v not in (None, False, ())}
        out.append(d)
    return out
