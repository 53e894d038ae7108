"""``make k8s-check``: render every kustomize overlay, validate it, and check our invariants.

1. ``kubectl kustomize k8s/overlays/<name>`` (skipped with a clear message where kubectl is absent);
2. ``kubernetes-validate --strict`` against the pinned Kubernetes version (schemas ship with the
   package: no cluster needed);
3. the invariants in :func:`check_manifests` (resources, probes, non-root, GPU only where meant,
   image names = docker/ images, env names = settings fields, no inline Secrets).

What cannot be checked without a cluster: that images pull, PVCs bind, probes pass, the
NetworkPolicies are enforced (needs a CNI that enforces them), GPUs get scheduled.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KUBERNETES_VERSION = "1.32.0"
OVERLAYS = ("local", "gpu")
WORKLOADS = ("Deployment", "StatefulSet", "Job", "DaemonSet")
THIRD_PARTY_IMAGES = {"redis"}  # pinned by tag in k8s/base
SETTINGS = {
    "W2A_POLICY_": ("services.policy.settings", "PolicySettings"),
    "W2A_PLANNER_": ("services.planner.settings", "PlannerSettings"),
    "W2A_TRAINER_": ("services.trainer.settings", "TrainerSettings"),
}
OTHER_ENV = {"W2A_WM_DIR", "W2A_TORCH_THREADS", "W2A_REDIS_URL", "NNODES", "NODE_RANK"}


def docker_images() -> set[str]:
    return {f"w2a/{p.name.removesuffix('.Dockerfile')}" for p in (ROOT / "docker").glob("*.Dockerfile")}


def settings_fields() -> dict[str, set[str]]:
    import importlib

    from services.policy.base_settings import BACKENDS

    out = {}
    for prefix, (module, cls) in SETTINGS.items():
        fields = getattr(importlib.import_module(module), cls).model_fields
        out[prefix] = {prefix + name.upper() for name in fields}
        if "base" in fields and prefix == "W2A_POLICY_":  # the nested base backend (W2A_POLICY_BASE__FIELD)
            out[prefix] |= {f"{prefix}BASE__{name.upper()}" for b in BACKENDS for name in b.model_fields}
    return out


def render(overlay: str) -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise FileNotFoundError("kubectl not found: cannot render kustomize overlays here")
    return subprocess.run([kubectl, "kustomize", str(ROOT / "k8s" / "overlays" / overlay)],
                          check=True, capture_output=True, text=True).stdout


def validate(rendered: str) -> tuple[bool, str]:
    """kubernetes-validate --strict on one rendered overlay; (passed, output)."""
    exe = shutil.which("kubernetes-validate") or str(Path(sys.executable).parent / "kubernetes-validate")
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
        fh.write(rendered)
    try:
        done = subprocess.run([exe, "--strict", "--quiet", "-k", KUBERNETES_VERSION, fh.name],
                              capture_output=True, text=True)
    finally:
        Path(fh.name).unlink()
    return done.returncode == 0, (done.stdout + done.stderr).strip()


def _pod_spec(doc: dict) -> dict | None:
    if doc.get("kind") not in WORKLOADS:
        return None
    return doc["spec"]["template"]["spec"]


def _env_names(container: dict, configmaps: dict[str, dict]) -> list[str]:
    names = [e["name"] for e in container.get("env", [])]
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef", {}).get("name")
        names += list(configmaps.get(ref, {}))
    return names


def _check_torchrun_nodes(workload: dict, pod: dict, where: str) -> list[str]:
    """A torchrun workload has one pod per node: NNODES = completions = parallelism for an
    Indexed Job, NNODES = replicas for a StatefulSet (else the rendezvous waits for nodes that
    never come, or ranks are left out)."""
    spec = workload.get("spec", {})
    job = workload.get("kind") == "Job"
    counts = {"completions/parallelism": (spec.get("completions"), spec.get("parallelism"))} if job \
        else {"replicas": (spec.get("replicas", 1),)}
    (what, values), = counts.items()
    out = []
    for c in pod.get("containers", []):
        if c.get("command", [None])[0] != "torchrun":
            continue
        nnodes = next((e.get("value") for e in c.get("env", []) if e.get("name") == "NNODES"), None)
        if nnodes is None or not str(nnodes).isdigit():
            out.append(f"{where}: a torchrun {workload.get('kind')} needs a literal NNODES env value")
        elif {int(nnodes)} != set(values):
            out.append(f"{where}: NNODES={nnodes} but {what} = {'/'.join(str(v) for v in values)}")
    return out


def check_manifests(docs: list[dict], overlay: str) -> list[str]:
    """Every broken invariant in one rendered overlay, as readable messages."""
    errors: list[str] = []
    images, fields = docker_images(), settings_fields()
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d.get("kind") == "ConfigMap"}
    gpu_users = []
    for doc in docs:
        kind, name = doc.get("kind"), doc.get("metadata", {}).get("name")
        where = f"{overlay}: {kind}/{name}"
        if kind == "Secret" and (doc.get("data") or doc.get("stringData")):
            errors.append(f"{where}: inline Secret values (reference Secrets created out of band)")
        for key in configmaps.get(name, {}) if kind == "ConfigMap" else []:
            prefix = next((p for p in fields if key.startswith(p)), None)
            if prefix and key not in fields[prefix]:
                errors.append(f"{where}: {key} is not a setting of {SETTINGS[prefix][1]}")
        pod = _pod_spec(doc)
        if pod is None:
            continue
        if kind == "StatefulSet" or (kind == "Job" and doc.get("spec", {}).get("completionMode") == "Indexed"):
            errors += _check_torchrun_nodes(doc, pod, where)
        pod_ctx = pod.get("securityContext", {})
        for c in pod.get("initContainers", []) + pod.get("containers", []):
            cwhere = f"{where} container {c['name']}"
            ctx = c.get("securityContext", {})
            if ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is not True:
                errors.append(f"{cwhere}: runAsNonRoot is not true")
            if ctx.get("runAsUser", pod_ctx.get("runAsUser")) == 0:
                errors.append(f"{cwhere}: runs as user 0")
            if ctx.get("allowPrivilegeEscalation") is not False:
                errors.append(f"{cwhere}: allowPrivilegeEscalation must be false")
            resources = c.get("resources", {})
            for part in ("requests", "limits"):
                missing = {"cpu", "memory"} - set(resources.get(part, {}))
                if missing:
                    errors.append(f"{cwhere}: resources.{part} lacks {', '.join(sorted(missing))}")
            if any("nvidia.com/gpu" in resources.get(p, {}) for p in ("requests", "limits")):
                gpu_users.append(name)
            if kind != "Job" and c in pod.get("containers", []):
                for probe in ("readinessProbe", "livenessProbe"):
                    if probe not in c:
                        errors.append(f"{cwhere}: no {probe}")
            image = c.get("image", "")
            repo, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
            if repo not in images and repo not in THIRD_PARTY_IMAGES:
                errors.append(f"{cwhere}: image {image!r} is neither a docker/ image ({sorted(images)}) "
                              f"nor an allowed third-party image")
            if not tag or tag == "latest":
                errors.append(f"{cwhere}: image {image!r} is not pinned to a tag")
            for env in _env_names(c, configmaps):
                prefix = next((p for p in fields if env.startswith(p)), None)
                if prefix is not None and env not in fields[prefix]:
                    errors.append(f"{cwhere}: env {env} is not a setting of {SETTINGS[prefix][1]}")
                elif prefix is None and env not in OTHER_ENV and env.startswith("W2A_"):
                    errors.append(f"{cwhere}: unknown w2a env {env}")
    if overlay == "gpu" and "world-model" not in gpu_users:
        errors.append("gpu: the world model does not request nvidia.com/gpu")
    if overlay != "gpu" and gpu_users:
        errors.append(f"{overlay}: GPU limits outside the gpu overlay ({', '.join(gpu_users)})")
    return errors


def main() -> int:
    import yaml

    if shutil.which("kubectl") is None:
        print("k8s-check: SKIPPED rendering — kubectl is not installed on this machine "
              "(install kubectl to render and validate the overlays)")
        return 0
    failed = False
    for overlay in OVERLAYS:
        rendered = render(overlay)
        docs = [d for d in yaml.safe_load_all(rendered) if d]
        ok, output = validate(rendered)
        errors = check_manifests(docs, overlay)
        status = "ok" if ok and not errors else "FAILED"
        print(f"k8s-check {overlay}: {len(docs)} resources, kubernetes-validate --strict "
              f"(k8s {KUBERNETES_VERSION}) {'passed' if ok else 'FAILED'}, invariants: "
              f"{len(errors)} problems -> {status}")
        if not ok:
            print(output)
        for e in errors:
            print(f"  - {e}")
        failed |= status != "ok"
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
