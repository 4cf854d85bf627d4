"""``mineru-cli doctor`` run for real, as a subprocess, on this machine (no GPU, no vllm).

MINERU_HOME points at a temporary folder so the model checks do not depend on what the
developer has downloaded; everything else (NVML, package metadata, storage) is the real thing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import cli_env, run_cli

CLI = Path(sys.executable).parent / "mineru-cli"


def doctor(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess:
    cmd = [str(CLI)] if CLI.exists() else [sys.executable, "-m", "mineru_cli"]
    e = cli_env(MINERU_HOME=str(home), **env)
    for var in ("MINERU_MODEL_BASE_DIR", "MINERU_CONFIG", "MINERU_MODEL_VLM_SERVER_URL", "CUDA_VISIBLE_DEVICES"):
        e.pop(var, None)
    return subprocess.run([*cmd, "doctor", *args], env=e, capture_output=True, text=True, timeout=60)


@pytest.fixture()
def home(tmp_path: Path) -> Path:
    h = tmp_path / "mineru-home"
    h.mkdir()
    return h


def test_doctor_text_on_this_machine(home):
    r = doctor(home=home)
    out = r.stdout
    assert r.returncode == 0, out + r.stderr
    assert "no GPU: no NVIDIA driver library (libnvidia-ml.so.1) found" in out
    assert "vllm              not installed" in out
    assert "mineru            4.0.12" in out
    assert "backend: cpu (requested: auto)" in out
    assert "VLM engine: llama-cpp; small models: onnx" in out
    assert "tier: flash" in out
    assert "- vllm: vllm is not installed (pip install 'mineru-cli[gpu]'" in out
    models = str(home / "models")
    assert f"basic     missing: MinerU-4_models_onnx ({models}/MinerU-4_models_onnx)" in out
    assert "download: mineru-kit models download --tier basic --small-backend onnx\n" in out
    assert (f"standard  missing: MinerU-4_models_onnx ({models}/MinerU-4_models_onnx), "
            f"MinerU2.5-Pro-2605-1.2B-GGUF ({models}/MinerU2.5-Pro-2605-1.2B-GGUF)") in out
    assert "download: mineru-kit models download --tier standard --small-backend onnx --vlm-engine llama-cpp" in out
    assert "OK: convert would run with these settings." in out
    # doctor only looks: it must not write MinerU's config or create the model folder
    assert list(home.iterdir()) == []


def test_doctor_json_on_this_machine(home):
    r = doctor("--json", home=home)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["ok"] is True and rep["exit_code"] == 0 and rep["problems"] == []
    gpu = rep["machine"]["gpu"]
    assert gpu["gpus"] == [] and gpu["error"] is None and "libnvidia-ml.so.1" in gpu["note"]
    eng = rep["machine"]["engines"]
    assert eng["mineru"] == {"name": "mineru", "installed": True, "version": "4.0.12", "build": None,
                             "cuda": None, "detail": ""}
    assert eng["vllm"]["installed"] is False and eng["lmdeploy"]["installed"] is False
    d = rep["decision"]
    assert (d["backend"], d["vlm_engine"], d["tier"], d["small_backend"], d["gpus"]) == (
        "cpu", "llama-cpp", "flash", "onnx", [])
    assert d["rejected"]["vllm"].startswith("vllm is not installed")
    [lane] = rep["lanes"]
    assert lane["label"] == "cpu" and lane["workers"] >= 1
    assert lane["env"]["MINERU_DEVICE_MODE"] == "cpu" and lane["env"]["MINERU_MODEL_VLM_ENGINE"] == "llama-cpp"
    tiers = {t["tier"]: t for t in rep["tiers"]}
    assert tiers["flash"]["ready"] is True and tiers["flash"]["download_command"] == ""
    assert tiers["basic"]["ready"] is False
    assert [x["name"] for x in tiers["basic"]["repos"]] == ["MinerU-4_models_onnx"]
    assert tiers["basic"]["repos"][0]["missing"] == 13  # the 13 ONNX files of MinerU 4.0.12's registry
    assert tiers["advanced"]["download_command"] == (
        "mineru-kit models download --tier standard --small-backend onnx --vlm-engine llama-cpp")
    assert rep["storage"] is None
    assert {r["id"] for r in rep["rules"]} >= {"blackwell-needs-vllm-0.11", "pre-ampere-not-in-vllm-v1",
                                               "vllm-free-memory", "lmdeploy-turbomind-below-8.0"}


def test_doctor_with_writable_output(home, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    r = doctor(str(out_dir), "--json", home=home)
    assert r.returncode == 0, r.stdout + r.stderr
    st = json.loads(r.stdout)["storage"]
    assert st["writable"] is True and st["error"] is None and st["protocol"] == "file"
    assert st["free_bytes"] > 0 and st["exists"] is True
    assert Path(st["probe"]).parent == out_dir
    assert list(out_dir.iterdir()) == []          # the probe object was deleted

    later = tmp_path / "not" / "yet"
    r = doctor(str(later), home=home)
    assert r.returncode == 0, r.stdout
    assert "writable" in r.stdout and "does not exist yet; convert creates it under" in r.stdout
    assert not (tmp_path / "not").exists()        # doctor does not create it


def test_doctor_with_memory_url_output(home):
    r = doctor("memory://bucket/prefix", "--json", home=home)
    st = json.loads(r.stdout)["storage"]
    assert r.returncode == 0 and st["writable"] is True and st["protocol"] == "memory"


def test_doctor_backend_vllm_is_exit_3_with_the_reason(home):
    r = doctor("--backend", "vllm", home=home)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "backend: none (requested: vllm)" in r.stdout
    assert "NOT OK: convert would not run with these settings:" in r.stdout
    assert "--backend vllm cannot work here: vllm is not installed" in r.stdout
    r = doctor("--backend", "vllm", "--fallback-cpu", home=home)
    assert r.returncode == 0
    assert "backend: cpu (requested: vllm)" in r.stdout and "falling back to the CPU (--fallback-cpu)" in r.stdout


def test_doctor_with_unwritable_output_is_exit_3(home, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    r = doctor(str(blocker / "out"), home=home)
    assert r.returncode == 3, r.stdout
    assert "NOT writable" in r.stdout
    assert f"output storage not writable: {blocker / 'out'} cannot be created: {blocker} is not a folder" in r.stdout
    r = doctor(str(blocker), "--json", home=home)
    rep = json.loads(r.stdout)
    assert r.returncode == 3 and rep["storage"]["writable"] is False
    assert rep["problems"] == [f"output storage not writable: {blocker} exists and is not a folder"]


def test_doctor_tier_standard_without_vlm_weights(home):
    """Small ONNX models present (empty files where MinerU's registry expects them), no GGUF:
    MinerU's own verification says basic is ready and standard is not."""
    from mineru.model.registry import MINERU_4_MODELS_ONNX

    root = home / "models" / MINERU_4_MODELS_ONNX.name
    for rel in MINERU_4_MODELS_ONNX.paths.values():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")
    r = doctor("--json", home=home)
    rep = json.loads(r.stdout)
    assert r.returncode == 0 and rep["decision"]["tier"] == "basic"
    assert "tier auto: basic is the highest tier whose model weights are present" in rep["decision"]["tier_reason"]

    r = doctor("--tier", "standard", home=home)
    assert r.returncode == 3, r.stdout
    gguf = home / "models" / "MinerU2.5-Pro-2605-1.2B-GGUF"
    assert f"tier standard needs model weights that are missing: MinerU2.5-Pro-2605-1.2B-GGUF under {gguf}" in r.stdout
    assert "mineru-kit models download --tier standard --small-backend onnx --vlm-engine llama-cpp" in r.stdout
    assert "Models per tier (for llama-cpp, small models onnx)" in r.stdout
    assert "  basic     ready (MinerU-4_models_onnx)" in r.stdout


def test_doctor_import_is_light():
    code = "import sys, mineru_cli.doctor; print(sorted(m for m in ('mineru','rich','fsspec','pynvml') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ), timeout=30)
    assert out.stdout.strip() == "[]", out.stderr


def test_ray_auth_failure_lines_name_cause_and_fix(tmp_path):
    """Which token Ray would send, and the one line for each way the cluster can refuse it."""
    from mineru_cli.ray_cluster import auth_failure_line, token_source

    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    assert token_source({}, home=str(tmp_path / "nohome")) is None
    assert token_source({}, home=str(home)) is None
    (home / ".ray" / "auth_token").write_text("x")
    assert token_source({}, home=str(home)) == "~/.ray/auth_token"
    f = tmp_path / "tok"
    f.write_text("y")
    assert token_source({"RAY_AUTH_TOKEN_PATH": str(f)}, home=str(home)) == f"RAY_AUTH_TOKEN_PATH={f}"
    assert token_source({"RAY_AUTH_TOKEN": "z", "RAY_AUTH_TOKEN_PATH": str(f)}, home=str(home)) == "RAY_AUTH_TOKEN"

    none = auth_failure_line("h:1", mode_token=False, source=None)
    assert none.startswith("the Ray cluster at h:1 requires token authentication and no token was given")
    assert "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN" in none
    unsent = auth_failure_line("h:1", mode_token=False, source="~/.ray/auth_token")
    assert "RAY_AUTH_MODE is not 'token' (a token is in ~/.ray/auth_token" in unsent
    wrong = auth_failure_line("h:1", mode_token=True, source="RAY_AUTH_TOKEN")
    assert "rejected the token from RAY_AUTH_TOKEN (wrong token)" in wrong
    missing = auth_failure_line("h:1", mode_token=True, source=None)
    assert "RAY_AUTH_MODE=token but no token was found" in missing
    assert all("\n" not in x for x in (none, unsent, wrong, missing))


def test_ray_token_problem_matches_what_ray_would_abort_on(tmp_path):
    """With RAY_AUTH_MODE=token Ray 2.60's token loader aborts the process on a blank
    RAY_AUTH_TOKEN, a missing or empty RAY_AUTH_TOKEN_PATH file, or no token at all: each is
    named before any Ray client is made."""
    from mineru_cli.ray_cluster import token_problem, token_source

    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    tok = tmp_path / "tok"
    tok.write_text("t" * 32)
    empty = tmp_path / "empty"
    empty.write_text("\n")
    assert token_problem({}, home=str(home)) is None  # not in token mode
    mode = {"RAY_AUTH_MODE": "token"}
    assert token_problem(mode, home=str(home)).startswith("no token was found")
    assert token_problem(dict(mode, RAY_AUTH_TOKEN=" "), home=str(home)) == "RAY_AUTH_TOKEN is empty"
    assert token_problem(dict(mode, RAY_AUTH_TOKEN="x"), home=str(home)) is None
    assert token_problem(dict(mode, RAY_AUTH_TOKEN_PATH=str(tok)), home=str(home)) is None
    assert token_problem(dict(mode, RAY_AUTH_TOKEN_PATH=str(empty)), home=str(home)) == f"RAY_AUTH_TOKEN_PATH={empty} is empty"
    missing = tmp_path / "missing"
    assert token_problem(dict(mode, RAY_AUTH_TOKEN_PATH=str(missing)), home=str(home)) == \
        f"RAY_AUTH_TOKEN_PATH={missing} does not exist"
    (home / ".ray" / "auth_token").write_text("")
    assert token_problem(mode, home=str(home)) == "~/.ray/auth_token is empty"
    (home / ".ray" / "auth_token").write_text("t" * 32)
    assert token_problem(mode, home=str(home)) is None
    # Ray reads only RAY_AUTH_TOKEN_PATH when it is set: a missing file is no fallback to ~/.ray
    assert token_source({"RAY_AUTH_TOKEN_PATH": str(missing)}, home=str(home)) is None


@pytest.mark.parametrize("address,reason", [("127.0.0.1", "expected HOST:PORT, got '127.0.0.1'"),
                                            ("127.0.0.1:99999", "port 99999 is not in 1-65535"),
                                            ("ray://head", "expected HOST:PORT, got 'head'")])
def test_bad_ray_address_is_a_usage_error(tmp_path, address, reason):
    r = run_cli("convert", str(tmp_path), "-o", str(tmp_path / "o"), "--executor", "ray", "--ray-address", address)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.strip().splitlines()[-1] == f"mineru-cli: error: invalid setting ray_address: Value error, {reason}"
