"""The Kubernetes manifests (deploy/kubernetes, SPEC section 8): every overlay builds with
`kubectl kustomize` and validates against the Kubernetes schemas (and KEDA's, for
ScaledObjects) offline; the properties that keep a deployment safe hold; and KEDA's scaling
arithmetic, run on a seeded queue in a real Redis, gives the replica count it should."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from shared import transitions
from shared.keys import Keys
from shared.redis import Conn
from shared.settings import Settings
from tests.support import kube
from tests.support.seed import seed_tasks

OVERLAY_REDIS = {
    "standalone": ("redis://", "redis"),
    "sentinel": ("redis+sentinel://", "redis-sentinel"),
    "cluster": ("redis+cluster://", "redis-cluster"),
}
APP_SERVICES = ("api", "worker", "scheduler", "notifier", "dashboard")


@pytest.fixture(params=kube.OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_every_overlay_builds_with_the_five_services_and_redis_url(overlay: str) -> None:
    objects = kube.build(overlay)
    deployments = {d["metadata"]["name"] for d in kube.of_kind(objects, "Deployment")}
    assert deployments >= set(APP_SERVICES)
    assert kube.find(objects, "Deployment", "worker")["spec"].get("replicas") is None, (
        "KEDA owns the worker's replicas"
    )
    scheme, _ = OVERLAY_REDIS[overlay]
    for workload, container in kube.app_containers(objects):
        env = kube.container_env(objects, workload, container["name"])
        assert env["REDIS_URL"].startswith(scheme), (overlay, env["REDIS_URL"])
        assert env["BIND_HOST"] == "0.0.0.0"
        # On a cluster each queue's events stay on its shard; elsewhere the default.
        assert env.get("EVENTS_MODE") == ("sharded" if overlay == "cluster" else None)
    services = {s["metadata"]["name"]: s for s in kube.of_kind(objects, "Service")}
    assert services["api"]["spec"]["ports"][0]["port"] == 8080
    assert services["dashboard"]["spec"]["ports"][0]["port"] == 8081


def test_overlay_redis_urls_name_the_redis_their_keda_triggers_read(overlay: str) -> None:
    objects = kube.build(overlay)
    [worker] = [w for w, c in kube.app_containers(objects) if w["metadata"]["name"] == "worker"]
    url = kube.container_env(objects, worker, "worker")["REDIS_URL"]
    hosts = url.split("://", 1)[1].split("/", 1)[0].split(",")
    namespace = worker["metadata"]["namespace"]
    _, keda_type = OVERLAY_REDIS[overlay]
    for scaled_object in kube.of_kind(objects, "ScaledObject"):
        for trigger in scaled_object["spec"]["triggers"]:
            assert trigger["type"] == keda_type
            # KEDA runs in its own namespace: the same hosts, qualified with ours.
            expected = [h.replace(":", f".{namespace}.svc:", 1) for h in hosts]
            assert trigger["metadata"]["addresses"].split(",") == expected
            if overlay == "sentinel":
                assert trigger["metadata"]["sentinelMaster"] == url.split("/")[3]
    if overlay == "standalone":
        redis = kube.find(objects, "StatefulSet", "redis")
        command = kube.pod_spec(redis)["containers"][0]["command"]
        assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    if overlay == "cluster":
        nodes = kube.find(objects, "StatefulSet", "redis-cluster")
        assert nodes["spec"]["serviceName"] == "redis-cluster"
        command = kube.pod_spec(nodes)["containers"][0]["command"]
        assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
        assert command[command.index("--cluster-require-full-coverage") + 1] == "no"
        assert all(h.split(":")[0].endswith(".redis-cluster") for h in hosts)


def test_every_object_validates_against_the_kubernetes_schemas(overlay: str) -> None:
    checked = 0
    for manifest in kube.build(overlay):
        if manifest["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: checked against KEDA's schema below
        try:
            kubernetes_validate.validate(manifest, kube.KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(part) for part in error.path)
            pytest.fail(f"{manifest['kind']}/{manifest['metadata']['name']}: {path}: {error}")
        checked += 1
    assert checked >= 14


def test_every_scaled_object_validates_against_keda_crd_schema(
    overlay: str, tmp_path: Path
) -> None:
    objects = kube.build_with_queue(overlay, "mail", tmp_path)
    files = []
    for index, scaled_object in enumerate(kube.of_kind(objects, "ScaledObject")):
        path = tmp_path / f"scaledobject-{index}-{scaled_object['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(scaled_object))
        files.append(str(path))
        spec = scaled_object["spec"]  # the CRD's CEL rule, which JSON Schema cannot say
        assert spec.get("minReplicaCount", 0) <= spec.get("maxReplicaCount", 100)
    assert len(files) == 3  # worker, notifier, worker-mail
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--schemafile", str(kube.KEDA_SCHEMA), *files],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_keda_schema_rejects_what_the_api_server_would() -> None:
    schema = json.loads(kube.KEDA_SCHEMA.read_text())
    good = kube.scaled_object_for(kube.build("standalone"), "worker")
    jsonschema.validate(good, schema)
    typo: dict[str, Any] = json.loads(json.dumps(good))
    typo["spec"]["advanced"]["scalingModifier"] = typo["spec"]["advanced"].pop("scalingModifiers")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(typo, schema)
    number = json.loads(json.dumps(good))
    number["spec"]["triggers"][0]["metadata"]["listLength"] = 16  # metadata is strings only
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(number, schema)


def test_every_container_has_probes_and_liveness_never_touches_redis(overlay: str) -> None:
    objects = kube.build(overlay)
    for workload in kube.workloads(objects):
        if workload["kind"] == "Job":
            continue  # runs to completion
        for container in kube.pod_spec(workload)["containers"]:
            name = f"{workload['metadata']['name']}/{container['name']}"
            assert "livenessProbe" in container and "readinessProbe" in container, name
            assert container["livenessProbe"].get("failureThreshold", 3) >= 3, name
    for workload, container in kube.app_containers(objects):
        name = f"{workload['metadata']['name']}/{container['name']}"
        # A startup probe that fails restarts the container too: it obeys the same rule.
        for kind in ("livenessProbe", "startupProbe"):
            probe = container.get(kind)
            if probe is None:
                continue
            if "httpGet" in probe:
                assert probe["httpGet"]["path"] == "/livez", (name, kind)
            else:
                command = probe["exec"]["command"]
                assert command[0] == "taskqueue-healthcheck", (name, kind)
                assert "--live" in command, (name, kind, command)
        liveness, readiness = container["livenessProbe"], container["readinessProbe"]
        ports = [p["containerPort"] for p in container.get("ports", [])]
        if ports:  # api, dashboard
            assert readiness["httpGet"]["path"] == "/readyz", name
            assert liveness["httpGet"]["port"] in ("http", *ports), name
        else:  # worker, scheduler, notifier: the service's own heartbeat
            service = container["command"][-1].rsplit(".", 1)[1]
            assert liveness["exec"]["command"] == ["taskqueue-healthcheck", service, "--live"]
            assert readiness["exec"]["command"] == ["taskqueue-healthcheck", service]
        for probe in (liveness, readiness):
            rendered = json.dumps(probe)
            assert "/api/health" not in rendered and "redis-cli" not in rendered, name
        assert "/readyz" not in json.dumps(liveness), name


def test_pods_run_non_root_read_only_with_resources(overlay: str) -> None:
    objects = kube.build(overlay)
    grace = float(Settings.model_fields["shutdown_grace_seconds"].default)
    for workload in kube.workloads(objects):
        spec = kube.pod_spec(workload)
        name = workload["metadata"]["name"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec.get("automountServiceAccountToken") is False, name
        # A Service named `api` would inject API_PORT=tcp://... into every pod.
        assert spec.get("enableServiceLinks") is False, name
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), name
            assert "memory" in resources["limits"], name
    for workload, container in kube.app_containers(objects):
        spec = kube.pod_spec(workload)
        name = workload["metadata"]["name"]
        assert spec["securityContext"]["runAsUser"] == 10001, name  # the Dockerfile's user
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]], name
        env = kube.container_env(objects, workload, container["name"])
        shutdown = float(env.get("SHUTDOWN_GRACE_SECONDS", grace))
        assert spec["terminationGracePeriodSeconds"] > shutdown + 10, name


def test_every_deployment_and_statefulset_has_a_disruption_budget(overlay: str) -> None:
    objects = kube.build(overlay)
    budgets = kube.of_kind(objects, "PodDisruptionBudget")
    for workload in kube.workloads(objects):
        if workload["kind"] == "Job" or workload["spec"].get("replicas") == 1:
            continue  # a budget over one pod could only block node drains
        labels = workload["spec"]["template"]["metadata"]["labels"]
        covering = [
            b
            for b in budgets
            if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
            and b["metadata"]["namespace"] == workload["metadata"]["namespace"]
        ]
        assert len(covering) == 1, workload["metadata"]["name"]


def test_scaled_object_targets_equal_the_concurrency_their_pods_get(
    overlay: str, tmp_path: Path
) -> None:
    objects = kube.build_with_queue(overlay, "mail", tmp_path)
    variables = {"worker": "WORKER_CONCURRENCY", "notifier": "NOTIFIER_CONCURRENCY"}
    for name, variable in (*variables.items(), ("worker-mail", "WORKER_CONCURRENCY")):
        deployment = kube.find(objects, "Deployment", name)
        container = kube.pod_spec(deployment)["containers"][0]["name"]
        env = kube.container_env(objects, deployment, container)
        scaled_object = kube.scaled_object_for(objects, name)
        modifiers = scaled_object["spec"]["advanced"]["scalingModifiers"]
        assert modifiers["target"] == env[variable], name
        assert modifiers.get("metricType", "AverageValue") == "AverageValue", name
        triggers = scaled_object["spec"]["triggers"]
        assert {t["metadata"]["listLength"] for t in triggers} == {env[variable]}, name
        names = {t["name"] for t in triggers}
        assert kube.evaluate_formula(modifiers["formula"], dict.fromkeys(names, 1)) == len(names)
    mail = kube.find(objects, "Deployment", "worker-mail")
    mail_env = kube.container_env(objects, mail, "worker")
    assert mail_env["WORKER_QUEUES"] == "mail"
    lists = [
        t["metadata"]["listName"]
        for t in kube.scaled_object_for(objects, "worker-mail")["spec"]["triggers"]
    ]
    assert lists == [*(f"tq:{{mail}}:ready:work:{p}" for p in (5, 4, 3, 2, 1)), "tq:{mail}:leases"]


def test_scaled_objects_read_the_queue_keys_of_the_key_schema() -> None:
    objects = kube.build("standalone")
    keys = Keys("default")
    expected = {
        "worker": [*keys.ready_all("work"), keys.leases],
        "notifier": [*keys.ready_all("notify"), keys.leases],
    }
    for target, names in expected.items():
        triggers = kube.scaled_object_for(objects, target)["spec"]["triggers"]
        assert sorted(t["metadata"]["listName"] for t in triggers) == sorted(names), target


async def _trigger_values(conn: Conn, scaled_object: kube.Manifest) -> dict[str, float]:
    """Each trigger's metric as KEDA reads it: its Lua script on the trigger's listName."""
    values = {}
    for trigger in scaled_object["spec"]["triggers"]:
        key = trigger["metadata"]["listName"]
        values[trigger["name"]] = float(
            await conn.redis.eval(kube.KEDA_REDIS_LENGTH_SCRIPT, 1, key)
        )
    return values


@pytest.mark.integration
async def test_keda_scales_workers_on_ready_plus_running_tasks_of_a_seeded_queue(
    conn: Conn, settings: Settings, tmp_path: Path
) -> None:
    objects = kube.build_with_queue("standalone", "mail", tmp_path)
    worker = kube.scaled_object_for(objects, "worker")
    notifier = kube.scaled_object_for(objects, "notifier")
    mail = kube.scaled_object_for(objects, "worker-mail")
    per_replica = int(worker["spec"]["advanced"]["scalingModifiers"]["target"])
    assert per_replica == 16
    maximum = worker["spec"]["maxReplicaCount"]

    async def replicas(scaled_object: kube.Manifest, current: int = 1) -> int:
        values = await _trigger_values(conn, scaled_object)
        return kube.desired_replicas(scaled_object, values, current)

    # An empty queue: inactive, so the minimum (and 0 where the minimum is 0).
    assert await replicas(worker) == worker["spec"]["minReplicaCount"] == 1
    scale_to_zero = json.loads(json.dumps(worker))
    scale_to_zero["spec"]["minReplicaCount"] = 0
    assert await replicas(scale_to_zero) == 0

    # 100 ready tasks in queue default, at two priorities: ceil(100 / 16) = 7 workers.
    await seed_tasks(conn, settings, 40, queue="default", priority=5)
    await seed_tasks(conn, settings, 60, queue="default", priority=2)
    values = await _trigger_values(conn, worker)
    assert values == {
        "ready_5": 40,
        "ready_4": 0,
        "ready_3": 0,
        "ready_2": 60,
        "ready_1": 0,
        "running": 0,
    }
    assert await replicas(worker) == 7 == math.ceil(100 / per_replica)
    assert await replicas(scale_to_zero, current=0) == 7  # activation: any task

    # 30 of them start: 70 ready + 30 running still need 7 workers (ZCARD of the leases).
    claimed = await transitions.claim(
        conn, "work", 30, worker="W", owner="worker-k8s-test", lease_seconds=300
    )
    assert len(claimed) == 30
    values = await _trigger_values(conn, worker)
    assert values["running"] == 30 and sum(values.values()) == 100
    assert await replicas(worker, current=3) == 7
    assert await replicas(worker, current=7) == 7  # and stays there

    # Email tasks are the notifier's: ready in the notify lane, not the worker's lists; the
    # notifier counts them plus the queue's running tasks (both lanes): ceil((20 + 30) / 32).
    await seed_tasks(conn, settings, 20, queue="default", type="email", payload="user@example.com")
    assert await replicas(worker, current=7) == 7
    assert await replicas(notifier) == math.ceil(50 / 32) == 2

    # 300 more: ceil(400 / 16) = 25, capped at maxReplicaCount.
    await seed_tasks(conn, settings, 300, queue="default")
    assert await replicas(worker, current=7) == maximum == 20

    # Another queue moves only its own pool: 33 ready mail tasks -> ceil(33 / 16) = 3.
    assert await replicas(mail) == 1
    await seed_tasks(conn, settings, 33, queue="mail")
    assert await replicas(mail) == 3
    assert await replicas(worker, current=20) == 20
