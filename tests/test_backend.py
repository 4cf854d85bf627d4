"""Backend choice: decide_backend over a table of fake machines, the real NVML binding's error
paths, worker lanes checked against MinerU's own config loader, and a real loopback HTTP server."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from mineru_cli.backend import (
    DRIVER_MISMATCH_EXPLANATION, GIB, RULES, EngineInfo, GpuInfo, GpuProbe, MachineProbe, RemoteProbe, VlmSettings,
    decide_backend, evaluate_rules, models_url, probe_engines, probe_gpus, probe_machine, probe_remote, torch_build,
    worker_lanes,
)
from mineru_cli.errors import EnvironmentProblem
from mineru_cli.models import RepoStatus, TierModels
from mineru_cli.settings import Settings

ONNX = "MinerU-4_models_onnx"
TORCH_SMALL = "MinerU-4_models_torch"
VLM_FULL = "MinerU2.5-Pro-2605-1.2B"
VLM_GGUF = "MinerU2.5-Pro-2605-1.2B-GGUF"
ALL_REPOS = {ONNX, TORCH_SMALL, VLM_FULL, VLM_GGUF}


# ------------------------------------------------------------------ fakes

class FakeTiers:
    """Tier probe with MinerU 4.0.12's repo mapping (mineru/model/registry.py); ``present`` repos are ready."""

    def __init__(self, present=ALL_REPOS):
        self.present = set(present)
        self.calls = []

    def __call__(self, tier, *, vlm_engine=None, server_url=None, small_backend=None):
        self.calls.append((tier, vlm_engine, server_url, small_backend))
        if tier == "flash":
            return TierModels(tier="flash", ready=True)
        names = [TORCH_SMALL if small_backend == "torch" else ONNX]
        if tier != "basic" and not server_url:
            names.append(VLM_GGUF if vlm_engine == "llama-cpp" else VLM_FULL)
        repos = [RepoStatus(name=n, ready=n in self.present, root=f"/models/{n}",
                            missing=[] if n in self.present else [".mineru_complete"]) for n in names]
        return TierModels(tier=tier, ready=all(r.ready for r in repos), repos=repos, small_backend=small_backend,
                          vlm_engine=None if server_url else vlm_engine, remote=bool(server_url))


def gpu(index=0, name="NVIDIA A100-SXM4-80GB", cc=(8, 0), total=80 * GIB, free=78 * GIB, **kw) -> GpuInfo:
    return GpuInfo(index=index, name=name, compute_capability=cc, memory_total=total, memory_free=free, **kw)


def engines(**installed: str) -> dict[str, EngineInfo]:
    """Always mineru + llama.cpp + onnxruntime; ``vllm="0.11.0"`` etc. add more. torch gets a cu128 build."""
    versions = {"mineru": "4.0.12", "mineru-llama-cpp": "0.2.0", "onnxruntime": "1.32.0"}
    versions.update({k.replace("_", "-"): v for k, v in installed.items()})
    out = {}
    for name, ver in versions.items():
        if name == "torch":
            build, cuda = ("cpu", None) if ver.endswith("+cpu") else ("cuda", "12.8")
            out[name] = EngineInfo(name=name, installed=True, version=ver, build=build, cuda=cuda)
        else:
            out[name] = EngineInfo(name=name, installed=True, version=ver)
    return out


def machine(gpus=(), *, error=None, error_kind=None, eng=None, remote=None, tiers=None, vlm=None,
            cuda_visible=None, driver_cuda="12.8") -> MachineProbe:
    g = GpuProbe(gpus=list(gpus), driver_version="570.86.15" if gpus else None,
                 cuda_driver_version=driver_cuda if gpus else None, error=error, error_kind=error_kind,
                 note=None if gpus or error else "no NVIDIA driver library (libnvidia-ml.so.1) found")
    return MachineProbe(gpu=g, engines=eng if eng is not None else engines(), remote=remote, cpus=8,
                        memory_available=32 * GIB, cuda_visible_devices=cuda_visible,
                        mineru_vlm=vlm or VlmSettings(), tier_probe=tiers or FakeTiers())


def settings(**kw) -> Settings:
    return Settings(**kw)


def text_of(d) -> str:
    return " | ".join(d.reasons)


GPU_STACK = dict(vllm="0.11.0", torch="2.8.0", torchvision="0.23.0", transformers="4.57.0", accelerate="1.10.0",
                 safetensors="0.6.2")


# ------------------------------------------------------------------ the decision table

def test_no_gpu_chooses_cpu_and_says_why():
    d = decide_backend(settings(), machine(eng=engines(**GPU_STACK)))
    assert (d.backend, d.vlm_engine, d.gpus) == ("cpu", "llama-cpp", [])
    assert "no NVIDIA GPU found" in text_of(d)
    assert "no NVIDIA GPU found" in d.rejected["vllm"]
    assert d.rejected["vllm"].startswith("no usable NVIDIA GPU for vllm 0.11.0")
    assert d.rejected["remote"].startswith("no server URL")
    assert d.tier == "advanced"  # FakeTiers: every repo present


def test_nvml_driver_mismatch_falls_back_to_cpu_with_the_explanation():
    m = machine(error=DRIVER_MISMATCH_EXPLANATION, error_kind="driver_mismatch", eng=engines(**GPU_STACK))
    d = decide_backend(settings(), m)
    assert d.backend == "cpu"
    assert "driver/library version mismatch (the driver was updated without a reboot)" in text_of(d)
    assert "reboot the machine, or run with --backend cpu meanwhile" in d.rejected["vllm"]
    assert DRIVER_MISMATCH_EXPLANATION in d.warnings


@pytest.mark.parametrize("cc,name", [((8, 0), "NVIDIA A100-SXM4-80GB"), ((8, 6), "NVIDIA GeForce RTX 3090")])
def test_one_ampere_gpu_with_vllm(cc, name):
    d = decide_backend(settings(), machine([gpu(cc=cc, name=name, total=24 * GIB, free=23 * GIB)],
                                           eng=engines(**GPU_STACK)))
    assert (d.backend, d.vlm_engine, d.gpus) == ("vllm", "vllm", [0])
    assert f"vllm 0.11.0 passes every rule on GPU 0 ({name}, Ampere, cc {cc[0]}.{cc[1]})" in text_of(d)
    assert "backend auto: vllm is the first usable engine" in text_of(d)
    assert d.small_backend == "torch"
    assert d.rejected["lmdeploy"].startswith("lmdeploy is not installed")
    assert d.rejected["cpu"] == "usable, but vllm comes first"


def test_blackwell_with_vllm_0_10_is_rejected_by_the_rule():
    m = machine([gpu(name="NVIDIA GeForce RTX 5090", cc=(12, 0), total=32 * GIB, free=31 * GIB)],
                eng=engines(**dict(GPU_STACK, vllm="0.10.1.1")))
    d = decide_backend(settings(), m)
    assert d.backend == "cpu"
    why = d.rejected["vllm"]
    assert "vllm 0.10.1.1 is older than 0.11" in why
    assert "Blackwell GPUs (cc 12.0)" in why and "invalid argument" in why
    assert "[rule blackwell-needs-vllm-0.11]" in why
    # and explicitly asked for, it is an environment error naming the rule
    with pytest.raises(EnvironmentProblem) as err:
        decide_backend(settings(backend="vllm"), m)
    assert err.value.exit_code == 3
    assert "--backend vllm cannot work here" in str(err.value) and "blackwell-needs-vllm-0.11" in str(err.value)


def test_blackwell_with_vllm_0_11_is_used():
    m = machine([gpu(name="NVIDIA GeForce RTX 5090", cc=(12, 0), total=32 * GIB, free=31 * GIB)],
                eng=engines(**dict(GPU_STACK, vllm="0.11.0")))
    d = decide_backend(settings(), m)
    assert (d.backend, d.gpus) == ("vllm", [0])
    assert "GPU 0 (NVIDIA GeForce RTX 5090, Blackwell, cc 12.0)" in text_of(d)


def test_blackwell_with_a_torch_built_for_cuda_12_6_is_rejected():
    eng = engines(**GPU_STACK)
    eng["torch"] = EngineInfo(name="torch", installed=True, version="2.7.0+cu126", build="cuda", cuda="12.6")
    d = decide_backend(settings(), machine([gpu(cc=(12, 0), name="NVIDIA RTX PRO 6000")], eng=eng))
    assert d.backend == "cpu"
    assert "need torch built for CUDA >= 12.8" in d.rejected["vllm"]


def test_turing_with_only_vllm_goes_to_cpu():
    m = machine([gpu(name="Tesla T4", cc=(7, 5), total=15 * GIB, free=14.5 * GIB)], eng=engines(**GPU_STACK))
    d = decide_backend(settings(), m)
    assert d.backend == "cpu"
    assert "vLLM's current engine (V1) does not support Turing GPUs (cc 7.5 < 8.0)" in d.rejected["vllm"]
    assert d.rejected["lmdeploy"].startswith("lmdeploy is not installed")
    assert "backend auto: no usable GPU engine" in text_of(d)


def test_turing_with_lmdeploy_uses_turbomind():
    m = machine([gpu(name="Tesla T4", cc=(7, 5), total=15 * GIB, free=14.5 * GIB)],
                eng=engines(**GPU_STACK, lmdeploy="0.10.1", qwen_vl_utils="0.0.11"))
    d = decide_backend(settings(), m)
    assert (d.backend, d.vlm_engine, d.gpus) == ("lmdeploy", "lmdeploy", [0])
    assert d.gpu_env == {0: {"MINERU_LMDEPLOY_BACKEND": "turbomind"}}
    assert "lmdeploy runs its turbomind backend on Turing (cc 7.5 < 8.0)" in text_of(d)
    assert "does not support Turing" in d.rejected["vllm"]
    [lane] = worker_lanes(d, settings())
    assert lane.env["MINERU_LMDEPLOY_BACKEND"] == "turbomind"
    assert lane.env["MINERU_MODEL_VLM_ENGINE"] == "lmdeploy"


def test_lmdeploy_without_qwen_vl_utils_is_rejected():
    m = machine([gpu(cc=(7, 5), name="Tesla T4", total=15 * GIB, free=14 * GIB)],
                eng=engines(**GPU_STACK, lmdeploy="0.10.1"))
    d = decide_backend(settings(), m)
    assert d.backend == "cpu"
    assert "qwen-vl-utils" in d.rejected["lmdeploy"]


def test_two_gpus_give_two_pinned_lanes():
    m = machine([gpu(0), gpu(1)], eng=engines(**GPU_STACK))
    d = decide_backend(settings(), m)
    assert (d.backend, d.gpus) == ("vllm", [0, 1])
    lanes = worker_lanes(d, settings())
    assert [ln.label for ln in lanes] == ["gpu0-vllm", "gpu1-vllm"]
    assert [ln.env["CUDA_VISIBLE_DEVICES"] for ln in lanes] == ["0", "1"]
    assert all(ln.workers == 1 for ln in lanes)
    assert all(ln.env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID" for ln in lanes)
    assert all(ln.env["MINERU_DEVICE_MODE"] == "cuda" and ln.env["MINERU_MODEL_VLM_ENGINE"] == "vllm" for ln in lanes)
    assert "one worker per GPU (0, 1)" in text_of(d)


def test_gpus_setting_restricts_and_rejects_unknown_indices():
    m = machine([gpu(0), gpu(1), gpu(2)], eng=engines(**GPU_STACK))
    d = decide_backend(settings(gpus="0,2"), m)
    assert d.gpus == [0, 2]
    assert [ln.env["CUDA_VISIBLE_DEVICES"] for ln in worker_lanes(d, settings(gpus="0,2"))] == ["0", "2"]
    with pytest.raises(EnvironmentProblem, match=r"--gpus names GPU\(s\) 5 that do not exist \(NVML sees 0, 1, 2\)"):
        decide_backend(settings(gpus="5", backend="vllm"), m)


def test_cuda_visible_devices_in_the_environment_is_respected():
    m = machine([gpu(0), gpu(1)], eng=engines(**GPU_STACK), cuda_visible="1")
    d = decide_backend(settings(), m)
    assert d.gpus == [1]
    assert "CUDA_VISIBLE_DEVICES=1 restricts the GPUs considered" in text_of(d)


def test_gpu_with_too_little_free_memory():
    busy = gpu(0, name="NVIDIA GeForce RTX 4090", cc=(8, 9), total=24 * GIB, free=5 * GIB)
    d = decide_backend(settings(), machine([busy], eng=engines(**GPU_STACK)))
    assert d.backend == "cpu"
    assert "has 5.0 GiB free of 24.0 GiB; vllm needs 8.0 GiB free here" in d.rejected["vllm"]
    assert "[rule vllm-free-memory]" in d.rejected["vllm"]


def test_free_memory_floor_scales_with_a_large_gpu():
    # MinerU asks vLLM for 10 % of a big GPU: 141 GiB total needs 14.1 GiB free
    h200 = gpu(0, name="NVIDIA H200", cc=(9, 0), total=141 * GIB, free=12 * GIB)
    d = decide_backend(settings(), machine([h200], eng=engines(**GPU_STACK)))
    assert "vllm needs 14.1 GiB free here" in d.rejected["vllm"]


def test_one_busy_gpu_out_of_two_is_skipped_with_a_warning():
    m = machine([gpu(0, free=2 * GIB), gpu(1)], eng=engines(**GPU_STACK))
    d = decide_backend(settings(), m)
    assert (d.backend, d.gpus) == ("vllm", [1])
    assert any(w.startswith("not used by vllm: GPU 0") and "2.0 GiB free" in w for w in d.warnings)


def test_remote_server_url():
    remote = RemoteProbe(url="http://10.0.0.5:30000/v1/models", reachable=True, status=200,
                         models=["MinerU2.5-Pro"], elapsed_s=0.01)
    m = machine([gpu(0)], eng=engines(**GPU_STACK), remote=remote)
    s = settings(server_url="http://10.0.0.5:30000", max_concurrency=8)
    d = decide_backend(s, m)
    assert (d.backend, d.vlm_engine, d.server_url) == ("remote", None, "http://10.0.0.5:30000")
    assert "a VLM server URL is set (--server-url)" in text_of(d)
    assert "model 'MinerU2.5-Pro' (the only one it lists)" in text_of(d)
    [lane] = worker_lanes(d, s, cpus=4, available_memory=64 * GIB)
    assert lane.label == "remote" and lane.workers == 4
    assert lane.env["MINERU_MODEL_VLM_SERVER_URL"] == "http://10.0.0.5:30000"
    assert lane.env["MINERU_MODEL_VLM_MAX_CONCURRENCY"] == "2"   # 8 requests over 4 workers
    # remote standard needs only the small models: the tier probe was asked with the server URL
    assert m.tier_probe.calls == [("advanced", None, "http://10.0.0.5:30000", "onnx")]
    assert d.tier == "advanced"


def test_unreachable_remote_fails_unless_fallback_cpu():
    remote = RemoteProbe(url="http://127.0.0.1:9/v1/models", error="cannot connect to http://127.0.0.1:9/v1/models: refused")
    m = machine(eng=engines(), remote=remote)
    with pytest.raises(EnvironmentProblem, match="cannot connect"):
        decide_backend(settings(server_url="http://127.0.0.1:9"), m)
    d = decide_backend(settings(server_url="http://127.0.0.1:9", fallback_cpu=True), m)
    assert d.backend == "cpu"
    assert any("falling back to the CPU (--fallback-cpu)" in w for w in d.warnings)
    assert "backend auto: the VLM server http://127.0.0.1:9 cannot work here; --fallback-cpu falls back" in text_of(d)
    assert d.rejected["remote"].startswith("the VLM server http://127.0.0.1:9 cannot be used: cannot connect")


def test_remote_with_several_models_needs_a_model_name():
    remote = RemoteProbe(url="u", reachable=True, status=200, models=["a", "b"])
    with pytest.raises(EnvironmentProblem, match="lists 2 models"):
        decide_backend(settings(server_url="http://h:1"), machine(remote=remote))
    d = decide_backend(settings(server_url="http://h:1"), machine(remote=remote, vlm=VlmSettings(model="b")))
    assert d.backend == "remote" and "model 'b' (configured)" in text_of(d)


def test_explicit_tier_standard_without_vlm_weights_names_repo_and_command():
    tiers = FakeTiers(present={ONNX})  # small models present, no GGUF
    with pytest.raises(EnvironmentProblem) as err:
        decide_backend(settings(tier="standard"), machine(tiers=tiers))
    msg = str(err.value)
    assert err.value.exit_code == 3
    assert f"{VLM_GGUF} under /models/{VLM_GGUF}" in msg
    assert "mineru-kit models download --tier standard --small-backend onnx --vlm-engine llama-cpp" in msg
    d = decide_backend(settings(tier="standard"), machine(tiers=tiers), strict=False)
    assert (d.ok, d.backend, d.vlm_engine, d.small_backend) == (False, "none", "llama-cpp", "onnx")
    assert d.problems == [msg]
    # auto takes the highest tier that is present
    d = decide_backend(settings(), machine(tiers=FakeTiers(present={ONNX})))
    assert d.tier == "basic" and "basic is the highest tier" in d.tier_reason


def test_gpu_engine_without_weights_leaves_the_gpu_for_the_cpu_at_flash():
    # nothing downloaded: tier auto resolves to flash, which runs no model
    d = decide_backend(settings(), machine([gpu(0)], eng=engines(**GPU_STACK), tiers=FakeTiers(present=set())))
    assert (d.backend, d.tier) == ("cpu", "flash")
    assert "tier flash runs no model, so the GPU is not needed" in d.rejected["vllm"]


def test_explicit_vllm_without_gpu_is_exit_3_and_fallback_cpu_warns():
    with pytest.raises(EnvironmentProblem) as err:
        decide_backend(settings(backend="vllm"), machine(eng=engines(**GPU_STACK)))
    assert err.value.exit_code == 3
    assert "--backend vllm cannot work here: no usable NVIDIA GPU for vllm 0.11.0: no NVIDIA GPU found" in str(err.value)
    d = decide_backend(settings(backend="vllm", fallback_cpu=True), machine(eng=engines(**GPU_STACK)))
    assert d.backend == "cpu"
    assert any(w.startswith("--backend vllm cannot work here (no usable NVIDIA GPU") and "--fallback-cpu" in w
               for w in d.warnings)
    # non-strict: the problem is reported instead of raised (doctor uses this)
    d2 = decide_backend(settings(backend="vllm"), machine(eng=engines(**GPU_STACK)), strict=False)
    assert not d2.ok and d2.backend == "none" and "no NVIDIA GPU found" in d2.problems[0]


def test_explicit_vllm_not_installed():
    with pytest.raises(EnvironmentProblem, match="vllm is not installed"):
        decide_backend(settings(backend="vllm"), machine([gpu(0)]))


def test_cpu_build_of_torch_rejects_gpu_engines():
    d = decide_backend(settings(), machine([gpu(0)], eng=engines(**dict(GPU_STACK, torch="2.8.0+cpu"))))
    assert d.backend == "cpu"
    assert "is not a CUDA build" in d.rejected["vllm"]


def test_cuda_13_torch_on_a_cuda_12_driver_is_rejected():
    eng = engines(**GPU_STACK)
    eng["torch"] = EngineInfo(name="torch", installed=True, version="2.9.0+cu130", build="cuda", cuda="13.0")
    d = decide_backend(settings(), machine([gpu(0)], eng=eng, driver_cuda="12.4"))
    assert "built for CUDA 13.0, but NVIDIA driver 570.86.15 supports CUDA 12.4 at most" in d.rejected["vllm"]


def test_every_rule_has_a_source_and_a_known_effect():
    assert len({r.id for r in RULES}) == len(RULES)
    for r in RULES:
        assert r.effect in ("reject", "warn", "env"), r.id
        assert len(r.source) > 20, r.id
        assert set(r.engines) <= {"vllm", "lmdeploy"}, r.id


def test_mineru_logits_processor_rule_warns_for_old_vllm_on_ampere():
    m = machine([gpu(0)], eng=engines(**dict(GPU_STACK, vllm="0.10.0")))
    outcome = evaluate_rules("vllm", m.gpu.gpus[0], m)
    assert not outcome.rejections
    assert [r.id for r, _ in outcome.warnings] == ["mineru-logits-processors-8.0"]


# ------------------------------------------------------------------ worker lanes and MinerU's config

def test_cpu_lane_size_and_threads():
    d = decide_backend(settings(), machine())
    [lane] = worker_lanes(d, settings(), cpus=16, available_memory=6 * 1_500_000_000)
    assert lane.label == "cpu" and lane.workers == 6          # capped by memory: 1.5 GB per worker
    assert lane.env["MINERU_DEVICE_MODE"] == "cpu" and lane.env["MINERU_MODEL_VLM_ENGINE"] == "llama-cpp"
    assert lane.env["MINERU_INTRA_OP_NUM_THREADS"] == "2"     # 16 cores // 6 workers
    [lane] = worker_lanes(d, settings(workers=3), cpus=16, available_memory=64 * GIB)
    assert lane.workers == 3


def test_lane_env_is_what_minerus_own_loader_reads(monkeypatch):
    """Each lane's variables, applied as a worker applies them, give MinerU's config the intended values."""
    import mineru.config as mc
    from mineru.model.runtime.device import get_device, resolve_small_model_backend

    cases = []
    d = decide_backend(settings(), machine([gpu(0)], eng=engines(**GPU_STACK)))
    cases.append((worker_lanes(d, settings())[0], "vllm", "", "cuda"))
    d = decide_backend(settings(), machine())
    cases.append((worker_lanes(d, settings(), cpus=2, available_memory=8 * GIB)[0], "llama-cpp", "", "cpu"))
    remote = RemoteProbe(url="u", reachable=True, status=200, models=["m"])
    d = decide_backend(settings(server_url="http://127.0.0.1:30000/v1"), machine(remote=remote))
    cases.append((worker_lanes(d, settings(server_url="http://127.0.0.1:30000/v1"), cpus=2,
                               available_memory=8 * GIB)[0], "auto", "http://127.0.0.1:30000/", "cpu"))
    for lane, engine, url, device in cases:
        with monkeypatch.context() as mp:
            for k, v in lane.env.items():
                mp.setenv(k, v)
            cfg = mc._load_effective_config().config
            assert cfg.model.vlm.engine == engine, lane.label
            assert cfg.model.vlm.server_url == url, lane.label
            assert cfg.model.small_backend == lane.env["MINERU_MODEL_SMALL_BACKEND"], lane.label
            assert get_device() == device, lane.label
            if device == "cpu":
                assert resolve_small_model_backend(cfg.model.small_backend) == "onnx"
            if "MINERU_MODEL_VLM_MAX_CONCURRENCY" in lane.env:
                assert cfg.model.vlm.max_concurrency == int(lane.env["MINERU_MODEL_VLM_MAX_CONCURRENCY"])


# ------------------------------------------------------------------ the real NVML binding

def test_real_probe_on_this_machine_finds_no_gpu_and_no_error():
    p = probe_gpus()
    assert p.gpus == [] and p.error is None
    assert "no NVIDIA driver library" in p.note
    assert p.elapsed_s < 5


def test_real_pynvml_driver_mismatch_is_explained(monkeypatch):
    import pynvml

    def init():
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH)

    monkeypatch.setattr(pynvml, "nvmlInit", init)
    # the binding maps the code to its own subclass
    with pytest.raises(pynvml.NVMLError_LibRmVersionMismatch):
        init()
    p = probe_gpus()
    assert p.error_kind == "driver_mismatch"
    assert p.error == ("NVIDIA driver/library version mismatch (the driver was updated without a reboot): "
                       "reboot the machine, or run with --backend cpu meanwhile")
    assert p.gpus == []


def test_real_pynvml_driver_not_loaded_and_timeout(monkeypatch):
    import pynvml

    monkeypatch.setattr(pynvml, "nvmlInit", lambda: (_ for _ in ()).throw(
        pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)))
    p = probe_gpus()
    assert p.error_kind == "driver_not_loaded" and "driver is not loaded" in p.error

    monkeypatch.setattr(pynvml, "nvmlInit", lambda: time.sleep(3))
    t0 = time.monotonic()
    p = probe_gpus(timeout=0.3)
    assert time.monotonic() - t0 < 1.5
    assert p.error_kind == "timeout" and "did not answer within 0.3 s" in p.error


def test_real_pynvml_reading_of_two_gpus(monkeypatch):
    """The parsing path over the binding's own call names, with NVML's answers stubbed."""
    import pynvml

    calls = []
    mem = {0: SimpleNamespace(total=80 * GIB, free=70 * GIB, used=10 * GIB),
           1: SimpleNamespace(total=16 * GIB, free=15 * GIB, used=GIB)}
    monkeypatch.setattr(pynvml, "nvmlInit", lambda: calls.append("init"))
    monkeypatch.setattr(pynvml, "nvmlShutdown", lambda: calls.append("shutdown"))
    monkeypatch.setattr(pynvml, "nvmlSystemGetDriverVersion", lambda: "550.54.15")
    monkeypatch.setattr(pynvml, "nvmlSystemGetCudaDriverVersion", lambda: 12040)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", lambda: 2)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", lambda i: i)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetName", lambda h: [b"NVIDIA A100-SXM4-80GB", "Tesla T4"][h])
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCudaComputeCapability", lambda h: [(8, 0), (7, 5)][h])
    monkeypatch.setattr(pynvml, "nvmlDeviceGetMemoryInfo", lambda h: mem[h])
    monkeypatch.setattr(pynvml, "nvmlDeviceGetUUID", lambda h: f"GPU-{h}")

    def mig(h):
        if h == 1:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return (1, 1)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetMigMode", mig)
    p = probe_gpus()
    assert p.error is None and calls == ["init", "shutdown"]
    assert (p.driver_version, p.cuda_driver_version) == ("550.54.15", "12.4")
    assert [(g.index, g.name, g.cc, g.architecture, g.memory_free, g.mig_enabled) for g in p.gpus] == [
        (0, "NVIDIA A100-SXM4-80GB", "8.0", "Ampere", 70 * GIB, True),
        (1, "Tesla T4", "7.5", "Turing", 15 * GIB, False),
    ]


# ------------------------------------------------------------------ engines from metadata

def test_probe_engines_reads_metadata_without_importing(monkeypatch):
    import sys

    info = probe_engines()
    assert info["mineru"].installed and info["mineru"].version == "4.0.12"
    assert info["onnxruntime"].installed
    assert not info["vllm"].installed and info["vllm"].version is None
    assert "vllm" not in sys.modules and "torch" not in sys.modules


@pytest.mark.parametrize("version_py,version,requires,expected", [
    ("__version__ = '2.5.1+cu121'\ncuda: Optional[str] = '12.1'\nhip: Optional[str] = None\n", "2.5.1+cu121", [],
     ("cuda", "12.1", "torch/version.py")),
    ("__version__ = '2.8.0+cpu'\ncuda: Optional[str] = None\nhip: Optional[str] = None\n", "2.8.0+cpu", [],
     ("cpu", None, "torch/version.py: cuda = None")),
    (None, "2.7.0+cu128", [], ("cuda", "12.8", "version tag +cu128")),
    (None, "2.9.0+cu130", [], ("cuda", "13.0", "version tag +cu130")),
    (None, "2.8.0", ["nvidia-cuda-runtime-cu12==12.8.90; platform_system == 'Linux'"],
     ("cuda", "12", "requires nvidia-cuda-runtime-cu12==12.8.90")),
    (None, "2.8.0", [], ("unknown", None, "no torch/version.py, no local version tag, no nvidia-* requirement")),
])
def test_torch_build_without_importing_torch(tmp_path, version_py, version, requires, expected):
    if version_py is not None:
        (tmp_path / "torch").mkdir()
        (tmp_path / "torch" / "version.py").write_text(version_py)
    dist = SimpleNamespace(version=version, requires=requires, locate_file=lambda p: tmp_path / p)
    assert torch_build(dist) == expected


# ------------------------------------------------------------------ a real server on 127.0.0.1

class _Models(BaseHTTPRequestHandler):
    body = json.dumps({"object": "list", "data": [{"id": "MinerU2.5-Pro", "object": "model"}]}).encode()
    seen: list = []

    def do_GET(self):  # noqa: N802
        _Models.seen.append((self.path, self.headers.get("Authorization")))
        if self.path != "/v1/models":
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def models_server(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Models)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    _Models.seen = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_remote_probe_against_a_real_server(models_server):
    p = probe_remote(models_server + "/v1/", api_key="sk-test")
    assert p.ok and p.reachable and p.status == 200
    assert p.models == ["MinerU2.5-Pro"]
    assert p.url == models_server + "/v1/models"
    assert _Models.seen == [("/v1/models", "Bearer sk-test")]


def test_remote_probe_with_user_and_password_in_the_url(models_server):
    """``user:password@`` becomes a Basic Authorization header; the probed URL carries no credentials."""
    url = models_server.replace("http://", "http://alice:pw@") + "/v1"
    p = probe_remote(url)
    assert p.ok and p.models == ["MinerU2.5-Pro"]
    assert p.url == models_server + "/v1/models" and "pw" not in p.url
    assert _Models.seen == [("/v1/models", "Basic YWxpY2U6cHc=")]


def test_remote_probe_404_is_reachable_but_not_ok(models_server):
    p = probe_remote(models_server + "/wrong-prefix")
    assert p.reachable and p.status == 404 and not p.ok
    assert p.error == "server answered HTTP 404 Not Found"


def test_remote_probe_answer_that_is_not_json(monkeypatch, models_server):
    monkeypatch.setattr(_Models, "body", b"not json")
    p = probe_remote(models_server)
    assert p.reachable and p.status == 200 and not p.ok
    assert "not an OpenAI /v1/models list" in p.error


def test_remote_probe_closed_port_fails_fast():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    t0 = time.monotonic()
    p = probe_remote(f"http://127.0.0.1:{port}", timeout=2.0)
    assert time.monotonic() - t0 < 2.0
    assert not p.reachable and p.status is None and not p.ok
    assert p.error.startswith(f"cannot connect to http://127.0.0.1:{port}/v1/models")


def test_probe_machine_with_a_real_server_decides_remote(models_server):
    s = settings(server_url=models_server)
    m = probe_machine(s, gpu_probe=lambda: GpuProbe(), engine_probe=engines, tier_probe=FakeTiers(),
                      vlm_settings_probe=VlmSettings, cpus=4, memory_available=16 * GIB)
    assert m.remote is not None and m.remote.models == ["MinerU2.5-Pro"]
    d = decide_backend(s, m)
    assert d.backend == "remote" and d.server_url == models_server


def test_models_url_strips_v1_like_mineru():
    assert models_url("http://h:30000") == "http://h:30000/v1/models"
    assert models_url("http://h:30000/v1/") == "http://h:30000/v1/models"
    assert models_url("https://proxy/x/v1") == "https://proxy/x/v1/models"
