"""The backend and tier decision: pure, from a :class:`~mineru_cli.backend.machine.MachineProbe`
and the settings to a :class:`BackendDecision` with its reasons and the rejected alternatives.

Must not: probe anything itself (the probes arrive in ``MachineProbe``; tier probes are asked
through it), print, or start workers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import EnvironmentProblem
from ..models import TierModels, resolve_tier, tier_models
from .machine import (AUTO_ORDER, GPU_ENGINES, INSTALL_HINTS, TORCH_STACK, VLM_ENGINE_OF, GpuInfo, MachineProbe,
                      _fmt_bytes)
from .rules import evaluate_rules


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
    from ..models import absent_model_folder, resolve_tier

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
