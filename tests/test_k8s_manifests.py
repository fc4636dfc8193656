"""The Kubernetes manifests under deploy/k8s, checked offline.

Each overlay (``cpu``, ``gpu``) is rendered as ``kubectl apply -k`` would render it, every
object is validated against the Kubernetes API schemas bundled in kubernetes-validate
(strict: unknown fields fail), the CRDs we use (cert-manager, Prometheus operator) against
small schemas written here, and then our own rules: every container bounded, probed and
locked down, every setting a real one, graceful stops that fit, Services and autoscalers
that point at what exists, network policies that let only the named clients in, TLS and
tokens that match on both ends, and the Qdrant values that the gateway relies on.

No kustomize binary can be relied on here, so ``render()`` implements the few kustomize
features our kustomizations use (resources, namespace, a configMapGenerator without name
suffix, images, and JSON 6902 patches with a kind/name target) and refuses any other. It
checks what kustomize would produce for these forms only; where ``kubectl`` is installed,
``test_renderer_matches_kustomize`` compares the two outputs.
"""

from __future__ import annotations

import copy
import importlib.util
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import jsonpatch
import jsonschema
import kubernetes_validate
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from embed_server.config import EmbedSettings
from scraper_service.config import ScraperSettings
from search_gateway.config import GatewaySettings

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("cpu", "gpu")
NAMESPACE = "tattoo-search"
# The oldest Kubernetes we support; its schemas lack nothing we use.
KUBERNETES_VERSION = "1.30.0"
PROBE_SCRIPT = K8S / "base" / "probes" / "grpc_health_probe.py"
DEPLOYMENT_DOC = ROOT / "docs" / "deployment.md"

Obj = dict[str, Any]


# --- rendering (the kustomize subset we use)

_KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "namespace", "resources", "configMapGenerator",
                         "generatorOptions", "images", "patches"}
_CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "ClusterIssuer", "PersistentVolume",
                   "StorageClass", "CustomResourceDefinition", "PriorityClass"}


def _load_all(path: Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def render(directory: Path) -> list[Obj]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - _KUSTOMIZATION_FIELDS
    assert not unknown, f"{directory}: render() does not implement {sorted(unknown)}; extend it or the test"
    objects: list[Obj] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        objects += render(path) if path.is_dir() else _load_all(path)
    for generator in kustomization.get("configMapGenerator", []):
        assert set(generator) <= {"name", "files"}, generator
        assert kustomization.get("generatorOptions", {}).get("disableNameSuffixHash") is True, (
            "render() implements generators without the name hash only"
        )
        data = {Path(f).name: (directory / f).read_text() for f in generator["files"]}
        objects.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]}, "data": data})
    for patch in kustomization.get("patches", []):
        assert set(patch) == {"path", "target"} and set(patch["target"]) <= {"kind", "name"}, patch
        operations = jsonpatch.JsonPatch(yaml.safe_load((directory / patch["path"]).read_text()))
        matched = [o for o in objects if _targets(patch["target"], o)]
        assert matched, f"{directory}: patch {patch['path']} matches nothing"
        for obj in matched:
            obj.update(operations.apply(obj))  # a failed `test` operation raises here
    for image in kustomization.get("images", []):
        for container in _all_containers(objects):
            name, _, _tag = container["image"].partition(":")
            if name == image["name"]:
                container["image"] = f"{image.get('newName', name)}:{image.get('newTag', _tag)}"
    if "namespace" in kustomization:
        for obj in objects:
            if obj["kind"] not in _CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = kustomization["namespace"]
    return objects


def _targets(target: dict[str, str], obj: Obj) -> bool:
    kind, name = obj["kind"], obj["metadata"]["name"]
    return target.get("kind", kind) == kind and target.get("name", name) == name


def _all_containers(objects: list[Obj]) -> Iterator[Obj]:
    for obj in objects:
        spec = _pod_spec(obj)
        if spec is not None:
            yield from spec.get("initContainers", [])
            yield from spec["containers"]


def _pod_spec(obj: Obj) -> Obj | None:
    if obj["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
        return obj["spec"]["template"]["spec"]
    return None


_RENDERED: dict[str, list[Obj]] = {}


def rendered(overlay: str) -> list[Obj]:
    if overlay not in _RENDERED:
        _RENDERED[overlay] = render(K8S / "overlays" / overlay)
    return copy.deepcopy(_RENDERED[overlay])


def find(objects: list[Obj], kind: str, name: str) -> Obj:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def workloads(objects: list[Obj]) -> list[Obj]:
    return [o for o in objects if _pod_spec(o) is not None]


def container(objects: list[Obj], deployment: str) -> Obj:
    containers = _pod_spec(find(objects, "Deployment", deployment))["containers"]  # type: ignore[index]
    assert len(containers) == 1
    return containers[0]


def env_values(c: Obj) -> dict[str, str]:
    """Literal values only (valueFrom entries are secrets: checked separately)."""
    return {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}


def env_refs(c: Obj) -> dict[str, tuple[str, str]]:
    return {e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
            for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}


def cpu_cores(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


# --- the services' settings

# Settings that issue 14 names and other engineers are adding now; the manifests use
# them already. Until its settings class declares one, it is tolerated and left out of
# the value check; once declared, its value is checked like any other.
COMING_SETTINGS = {"GATEWAY_GALLERY_URL", "GATEWAY_GALLERY_API_KEY"}
# Deployment -> (its settings class, its variables' prefix, its gRPC port or None).
SERVICES: dict[str, tuple[type[Any], str, int | None]] = {
    "embed-server": (EmbedSettings, "EMBED_", 50051),
    "scraper": (ScraperSettings, "SCRAPER_", 50052),
    "gateway": (GatewaySettings, "GATEWAY_", None),
}


def settings_of(objects: list[Obj], deployment: str) -> Any:
    """The service's settings as its container would read them (secrets and the
    settings still being added left out)."""
    cls, prefix, _ = SERVICES[deployment]
    pending = COMING_SETTINGS - set(cls.variables().values())
    env = {k: v for k, v in env_values(container(objects, deployment)).items() if k not in pending}
    return cls.from_env(env)


# --- schemas of the CRDs we use (the fields we set, closed, so a typo fails)

_ISSUER_REF = {"type": "object", "required": ["name"], "additionalProperties": False,
               "properties": {"name": {"type": "string"}, "kind": {"enum": ["Issuer", "ClusterIssuer"]},
                              "group": {"type": "string"}}}
_PRIVATE_KEY = {"type": "object", "additionalProperties": False,
                "properties": {"algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]}, "size": {"type": "integer"},
                               "rotationPolicy": {"enum": ["Never", "Always"]}}}
_USAGES = ["signing", "digital signature", "key encipherment", "server auth", "client auth", "cert sign"]
_METADATA = {"type": "object", "required": ["name"]}
CRD_SCHEMAS: dict[tuple[str, str], Obj] = {
    ("cert-manager.io/v1", "Certificate"): {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"metadata": _METADATA, "spec": {
            "type": "object", "required": ["secretName", "issuerRef"], "additionalProperties": False,
            "anyOf": [{"required": ["commonName"]}, {"required": ["dnsNames"]}],
            "properties": {
                "secretName": {"type": "string"}, "issuerRef": _ISSUER_REF, "isCA": {"type": "boolean"},
                "commonName": {"type": "string", "maxLength": 64},
                "dnsNames": {"type": "array", "items": {"type": "string"}},
                "ipAddresses": {"type": "array", "items": {"type": "string"}},
                "duration": {"type": "string", "pattern": r"^\d+h$"},
                "renewBefore": {"type": "string", "pattern": r"^\d+h$"},
                "privateKey": _PRIVATE_KEY,
                "usages": {"type": "array", "items": {"enum": _USAGES}}}}}},
    ("cert-manager.io/v1", "Issuer"): {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"metadata": _METADATA, "spec": {
            "type": "object", "minProperties": 1, "maxProperties": 1,
            "properties": {"selfSigned": {"type": "object"},
                           "ca": {"type": "object", "required": ["secretName"], "additionalProperties": False,
                                  "properties": {"secretName": {"type": "string"}}}},
            "additionalProperties": False}}},
    ("monitoring.coreos.com/v1", "ServiceMonitor"): {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"metadata": _METADATA, "spec": {
            "type": "object", "required": ["selector", "endpoints"], "additionalProperties": False,
            "properties": {
                "selector": {"type": "object", "properties": {"matchLabels": {"type": "object"}}},
                "endpoints": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["port"], "additionalProperties": False,
                    "properties": {"port": {"type": "string"}, "path": {"type": "string"},
                                   "interval": {"type": "string", "pattern": r"^\d+[sm]$"},
                                   "scheme": {"enum": ["http", "https"]}}}}}}}},
}


# --- rendering and schemas


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="no kubectl here to compare render() with")
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_renderer_matches_kustomize(overlay: str) -> None:
    out = subprocess.run(["kubectl", "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    def key(o: Obj) -> tuple[str, str, str]:
        return o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]
    theirs = {key(o): o for o in yaml.safe_load_all(out) if o}
    ours = {key(o): o for o in rendered(overlay)}
    assert sorted(ours) == sorted(theirs)
    for k, obj in ours.items():
        assert obj == theirs[k], f"{k} differs from kustomize's rendering"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates(overlay: str) -> None:
    objects = rendered(overlay)
    for obj in objects:
        where = f"{overlay}: {obj['kind']}/{obj['metadata']['name']}"
        schema = CRD_SCHEMAS.get((obj["apiVersion"], obj["kind"]))
        try:
            if schema is not None:
                jsonschema.validate(obj, schema)
            else:
                kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except (jsonschema.ValidationError, kubernetes_validate.ValidationError) as exc:
            pytest.fail(f"{where}: {'.'.join(map(str, exc.path))}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            pytest.fail(f"{where}: no schema ({exc.message}); add one to CRD_SCHEMAS")
        if obj["kind"] not in _CLUSTER_SCOPED:
            assert obj["metadata"].get("namespace") == NAMESPACE, f"{where} is not in {NAMESPACE}"


def test_overlays_keep_cluster_extensions_where_they_belong() -> None:
    # A laptop cluster has no cert-manager or Prometheus operator: `kubectl apply -k`
    # would stop at the first unknown kind.
    assert not [o["kind"] for o in rendered("cpu") if (o["apiVersion"], o["kind"]) in CRD_SCHEMAS]
    kinds = {o["kind"] for o in rendered("gpu")}
    assert {"Certificate", "Issuer", "ServiceMonitor", "HorizontalPodAutoscaler", "Ingress"} <= kinds


# --- containers


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_containers_are_bounded_probed_and_locked_down(overlay: str) -> None:
    for workload in workloads(rendered(overlay)):
        spec = _pod_spec(workload)
        assert spec is not None
        name = workload["metadata"]["name"]
        # Service links would add <SERVICE>_PORT=tcp://... variables, which our settings
        # refuse as unknown (EMBED_SERVER_SERVICE_HOST, GATEWAY_SERVICE_HOST, ...).
        assert spec.get("enableServiceLinks") is False, name
        assert spec.get("automountServiceAccountToken") is False, name
        pod_security = spec["securityContext"]
        assert pod_security["runAsNonRoot"] is True and pod_security["runAsUser"] > 0, name
        assert pod_security["seccompProfile"]["type"] == "RuntimeDefault", name
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in spec["containers"]:
            where = f"{overlay}: {name}/{c['name']}"
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"].get(bound, {})), f"{where} has no {bound}"
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert probe in c, f"{where} has no {probe}"
            security = c["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["capabilities"]["drop"] == ["ALL"], where
            # A read-only image needs somewhere to write temporary files.
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            assert "emptyDir" in volumes[mounts["/tmp"]], where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grpc_probes_ask_their_own_server(overlay: str) -> None:
    objects = rendered(overlay)
    for deployment, (_, prefix, port) in SERVICES.items():
        if port is None:
            continue
        c = container(objects, deployment)
        assert {p["name"]: p["containerPort"] for p in c["ports"]}["grpc"] == port
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            command = c[kind]["exec"]["command"]
            assert command[:2] == ["python", f"{mounts['grpc-health-probe']}/{PROBE_SCRIPT.name}"], command
            # Flag/value pairs; a lone trailing flag (liveness's `--any-status`) has no value.
            args = dict(zip(command[2::2], command[3::2], strict=False))
            assert args["--port"] == str(port) and args["--env-prefix"] == prefix, command
            # A probe that python needs a second or more to start must have time to answer.
            assert c[kind]["timeoutSeconds"] >= 3
        assert "--any-status" in c["livenessProbe"]["exec"]["command"]
    # The embed server starts taking calls once every model is warm, and stays ready
    # while the gateway's default model is.
    embed = container(objects, "embed-server")
    assert embed["startupProbe"]["exec"]["command"][-2:] == ["--service", ""]
    default_model = settings_of(objects, "gateway").default_model
    assert embed["readinessProbe"]["exec"]["command"][-2:] == ["--service", f"tattoo_search.v1.EmbedService/{default_model}"]
    assert default_model in settings_of(objects, "embed-server").models
    # Loading and exporting models takes minutes: at least ten before the kubelet gives up.
    startup = embed["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_env_names_are_settings_and_values_parse(overlay: str) -> None:
    objects = rendered(overlay)
    for deployment, (cls, prefix, _) in SERVICES.items():
        declared = set(cls.variables().values())
        names = {e["name"] for e in container(objects, deployment)["env"]}
        ours = {n for n in names if n.startswith(prefix)}
        unknown = ours - declared - COMING_SETTINGS
        assert not unknown, f"{deployment}: not settings: {sorted(unknown)}"
        # The settings classes check every value at start; they must accept ours.
        settings_of(objects, deployment)


def _grace_s(objects: list[Obj], deployment: str) -> float:
    settings = settings_of(objects, deployment)
    if deployment == "gateway":
        return int(settings.search_budget_s) + 5  # uvicorn's graceful stop (search_gateway/server.py)
    if hasattr(settings, "grace_s"):
        return float(settings.grace_s)
    from embed_server.__main__ import GRACE_S  # where EMBED_GRACE_S is not a setting yet

    return GRACE_S


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_graceful_stop_fits_in_the_termination_grace(overlay: str) -> None:
    objects = rendered(overlay)
    for deployment in SERVICES:
        spec = _pod_spec(find(objects, "Deployment", deployment))
        assert spec is not None
        pre_stop = container(objects, deployment)["lifecycle"]["preStop"]["exec"]["command"]
        assert pre_stop[0] == "sleep"
        needed = float(pre_stop[1]) + _grace_s(objects, deployment)
        assert spec["terminationGracePeriodSeconds"] > needed, f"{deployment}: {needed} s of stop does not fit"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_embed_threads_fit_the_cpu_limit(overlay: str) -> None:
    objects = rendered(overlay)
    c = container(objects, "embed-server")
    settings = settings_of(objects, "embed-server")
    limit = cpu_cores(c["resources"]["limits"]["cpu"])
    assert settings.threads <= limit and settings.decode_workers <= limit


# --- Services, autoscalers, disruption budgets


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_and_budgets_select_pods_and_ports(overlay: str) -> None:
    objects = rendered(overlay)
    pods = [(w["spec"]["template"]["metadata"]["labels"], _pod_spec(w)) for w in workloads(objects)]
    for service in (o for o in objects if o["kind"] == "Service"):
        selected = [spec for labels, spec in pods if _selects(service["spec"]["selector"], labels)]
        assert selected, f"Service {service['metadata']['name']} selects no pod"
        for port in service["spec"]["ports"]:
            for spec in selected:
                names = {p["name"] for c in spec["containers"] for p in c.get("ports", [])}
                assert port["targetPort"] in names, f"{service['metadata']['name']}: no container port {port['targetPort']}"
    for budget in (o for o in objects if o["kind"] == "PodDisruptionBudget"):
        assert any(_selects(budget["spec"]["selector"]["matchLabels"], labels) for labels, _ in pods)
    for monitor in (o for o in objects if o["kind"] == "ServiceMonitor"):
        services = [s for s in objects if s["kind"] == "Service"
                    and _selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])]
        assert services and all(e["port"] in {p["name"] for s in services for p in s["spec"]["ports"]}
                                for e in monitor["spec"]["endpoints"]), monitor["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_balances_over_headless_services(overlay: str) -> None:
    objects = rendered(overlay)
    settings = settings_of(objects, "gateway")
    for target, backend, port_name in ((settings.embed_target, "embed-server", "grpc"),
                                       (settings.scraper_target, "scraper", "grpc")):
        # dns:/// resolves every ready pod's address; round robin then spreads the calls.
        assert target.startswith("dns:///"), target
        host, port = target.removeprefix("dns:///").rsplit(":", 1)
        service = find(objects, "Service", host)
        assert service["spec"].get("clusterIP") == "None", f"{host} must be headless"
        assert {p["port"]: p["targetPort"] for p in service["spec"]["ports"]}[int(port)] == port_name
        pod_labels = find(objects, "Deployment", backend)["spec"]["template"]["metadata"]["labels"]
        assert _selects(service["spec"]["selector"], pod_labels)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_autoscalers_own_their_replica_counts(overlay: str) -> None:
    objects = rendered(overlay)
    for hpa in (o for o in objects if o["kind"] == "HorizontalPodAutoscaler"):
        target = find(objects, hpa["spec"]["scaleTargetRef"]["kind"], hpa["spec"]["scaleTargetRef"]["name"])
        # `kubectl apply` would otherwise reset the count the autoscaler chose.
        assert "replicas" not in target["spec"], f"{target['metadata']['name']} sets replicas under an autoscaler"
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    scaled = {o["spec"]["scaleTargetRef"]["name"] for o in objects if o["kind"] == "HorizontalPodAutoscaler"}
    assert {"gateway", "scraper"} <= scaled


def test_embed_autoscaler_follows_the_queue_and_the_batch_size() -> None:
    objects = rendered("gpu")
    hpa = find(objects, "HorizontalPodAutoscaler", "embed-server")
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == "embed_queue_depth"
    target = float(metric["pods"]["target"]["averageValue"])
    settings = settings_of(objects, "embed-server")
    # Two full batches waiting per pod (docs/deployment.md), far below the point where
    # the server answers RESOURCE_EXHAUSTED.
    assert target == 2 * settings.max_batch_size
    assert target <= settings.max_queue_size / 2
    # prometheus-adapter serves that metric from the embed server's gauge.
    adapter = yaml.safe_load((K8S / "monitoring" / "prometheus-adapter-values.yaml").read_text())
    rules = [r for r in adapter["rules"]["custom"] if r["name"]["as"] == "embed_queue_depth"]
    assert len(rules) == 1 and rules[0]["seriesQuery"].startswith("embed_queue_depth{")
    assert rules[0]["resources"]["overrides"]["pod"] == {"resource": "pod"}


# --- network policies


def _admitted(objects: list[Obj], pod_labels: dict[str, str], port: str | int) -> list[Obj]:
    """The `from` peers allowed to reach `port` of a pod with these labels (one list
    entry per peer; [] means closed). A rule with no `from` admits everyone: {}."""
    peers: list[Obj] = []
    for policy in (o for o in objects if o["kind"] == "NetworkPolicy"):
        if "Ingress" not in policy["spec"]["policyTypes"]:
            continue
        if not _selects(policy["spec"]["podSelector"].get("matchLabels", {}), pod_labels):
            continue
        for rule in policy["spec"].get("ingress", []):
            ports = [p["port"] for p in rule.get("ports", [])]
            if ports and port not in ports:
                continue
            peers += rule.get("from", [{}])
    return peers


def _peer(labels: dict[str, str] | None = None, namespace: str | None = None, any_namespace: bool = False) -> Obj:
    peer: Obj = {}
    if namespace is not None:
        peer["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
    if any_namespace:
        peer["namespaceSelector"] = {}
    if labels is not None:
        peer["podSelector"] = {"matchLabels": labels}
    return peer


GATEWAY_PODS = _peer({"app.kubernetes.io/name": "gateway"})
MONITORING = _peer(namespace="monitoring")
QDRANT_LABELS = {"app.kubernetes.io/name": "qdrant", "app.kubernetes.io/instance": "qdrant"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_admit_only_the_named_clients(overlay: str) -> None:
    objects = rendered(overlay)
    deny = find(objects, "NetworkPolicy", "default-deny-ingress")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress"]}
    embed = {"app.kubernetes.io/name": "embed-server"}
    scraper = {"app.kubernetes.io/name": "scraper"}
    embed_clients = _peer({"tattoo-search.io/embed-client": "true"}, any_namespace=True)
    scraper_clients = _peer({"tattoo-search.io/scraper-client": "true"}, any_namespace=True)
    assert _admitted(objects, embed, "grpc") == [GATEWAY_PODS, embed_clients]
    assert _admitted(objects, scraper, "grpc") == [GATEWAY_PODS, scraper_clients]
    for labels in (embed, scraper):
        assert _admitted(objects, labels, "metrics") == [MONITORING]
        assert _admitted(objects, labels, 22) == []
    # The store: its API for the gateway only, its peer port for its peers only.
    assert _admitted(objects, QDRANT_LABELS, 6334) == [GATEWAY_PODS]
    assert _admitted(objects, QDRANT_LABELS, 6333) == [GATEWAY_PODS, MONITORING]
    assert _admitted(objects, QDRANT_LABELS, 6335) == [_peer(QDRANT_LABELS)]
    gateway_http = _admitted(objects, {"app.kubernetes.io/name": "gateway"}, "http")
    if overlay == "gpu":
        assert gateway_http == [_peer(namespace="ingress-nginx"), MONITORING]
    # The embed server needs DNS only.
    egress = find(objects, "NetworkPolicy", "embed-server-egress")["spec"]["egress"]
    assert [p["port"] for rule in egress for p in rule["ports"]] == [53, 53]


# --- TLS, tokens, secrets


def _secret_volumes(spec: Obj) -> dict[str, str]:
    return {v["name"]: v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v}


def _file_secret(objects: list[Obj], deployment: str, path: str) -> str:
    """The Secret whose volume holds `path` in the deployment's container."""
    spec = _pod_spec(find(objects, "Deployment", deployment))
    assert spec is not None
    volumes = _secret_volumes(spec)
    for mount in container(objects, deployment)["volumeMounts"]:
        if path.startswith(mount["mountPath"] + "/") and mount["name"] in volumes:
            return volumes[mount["name"]]
    raise AssertionError(f"{deployment}: {path} is on no Secret volume")


def test_gpu_overlay_runs_on_gpus_with_tls_and_tokens() -> None:
    objects = rendered("gpu")
    embed = container(objects, "embed-server")
    spec = _pod_spec(find(objects, "Deployment", "embed-server"))
    assert spec is not None
    assert embed["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert spec["nodeSelector"]
    assert settings_of(objects, "embed-server").device == "cuda"
    certificates = {c["spec"]["secretName"]: c["spec"] for c in objects if c["kind"] == "Certificate"}
    for deployment, prefix in (("embed-server", "EMBED_"), ("scraper", "SCRAPER_")):
        env = env_values(container(objects, deployment))
        secrets = {_file_secret(objects, deployment, env[f"{prefix}TLS_{kind}_FILE"])
                   for kind in ("CERT", "KEY", "CLIENT_CA")}
        (secret,) = secrets
        cert = certificates[secret]
        # The name the gateway dials, and localhost for the pod's own probe (which
        # shows this certificate as a client certificate).
        target = getattr(settings_of(objects, "gateway"), f"{deployment.split('-')[0]}_target")
        host = target.removeprefix("dns:///").rsplit(":", 1)[0]
        assert host in cert["dnsNames"] and "localhost" in cert["dnsNames"]
        assert {"server auth", "client auth"} <= set(cert["usages"])
        assert cert["issuerRef"]["name"] == "tattoo-search-ca"
        # Both ends of each hop read the same token.
        gateway_token = env_refs(container(objects, "gateway"))[f"GATEWAY_{prefix}AUTH_TOKEN"]
        assert gateway_token == env_refs(container(objects, deployment))[f"{prefix}AUTH_TOKEN"]
    gateway = env_values(container(objects, "gateway"))
    client = {_file_secret(objects, "gateway", gateway[f"GATEWAY_GRPC_TLS_{kind}_FILE"]) for kind in ("CA", "CERT", "KEY")}
    (client_secret,) = client
    assert certificates[client_secret]["usages"] == ["client auth"]
    assert certificates[client_secret]["issuerRef"]["name"] == "tattoo-search-ca"


def test_cpu_overlay_runs_without_gpu_tls_or_tokens() -> None:
    objects = rendered("cpu")
    for deployment in SERVICES:
        c = container(objects, deployment)
        names = {e["name"] for e in c["env"]}
        assert not {n for n in names if "_TLS_" in n or n.endswith("AUTH_TOKEN")}, deployment
        assert "nvidia.com/gpu" not in c["resources"]["limits"]
    assert settings_of(objects, "embed-server").device == "cpu"


def _documented_secrets() -> set[str]:
    text = DEPLOYMENT_DOC.read_text()
    section = text.split("## Secrets", 1)[1].split("\n## ", 1)[0]
    return {line.split("`")[1] for line in section.splitlines() if line.startswith("| `")}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_secret_is_made_here_or_documented(overlay: str) -> None:
    objects = rendered(overlay)
    made = {o["metadata"]["name"] for o in objects if o["kind"] == "Secret"}
    made |= {o["spec"]["secretName"] for o in objects if o["kind"] == "Certificate"}
    documented = _documented_secrets()
    for workload in workloads(objects):
        spec = _pod_spec(workload)
        assert spec is not None
        used = set(_secret_volumes(spec).values())
        used |= {name for c in spec["containers"] for name, _ in env_refs(c).values()}
        missing = used - made - documented
        assert not missing, f"{workload['metadata']['name']} needs Secrets nobody makes: {missing}"
    if overlay == "gpu":
        assert not [o for o in objects if o["kind"] == "Secret"], "production secrets must not live in the repository"


# --- the gallery store (Qdrant's Helm chart)


def test_qdrant_values_make_a_replicated_cluster_the_gateway_uses() -> None:
    values = yaml.safe_load((K8S / "qdrant" / "values.yaml").read_text())
    assert values["config"]["cluster"]["enabled"] is True
    assert values["config"]["cluster"]["p2p"]["port"] == 6335
    assert values["replicaCount"] >= 3
    collection = values["config"]["storage"]["collection"]
    assert collection["replication_factor"] >= 2 and collection["replication_factor"] <= values["replicaCount"]
    assert values["persistence"]["size"] and values["snapshotPersistence"]["enabled"] is True
    assert values["podDisruptionBudget"]["enabled"] is True
    # The chart's default init container chowns the volumes as root, which the
    # namespace's restricted Pod Security level refuses.
    assert values["image"]["useUnprivilegedImage"] is True and values["updateVolumeFsOwnership"] is False
    assert values["containerSecurityContext"]["readOnlyRootFilesystem"] is True
    for overlay in OVERLAYS:
        objects = rendered(overlay)
        gateway = container(objects, "gateway")
        url = urlsplit(env_values(gateway)["GATEWAY_GALLERY_URL"])
        # Release "qdrant": the chart names its Service after it, and the network
        # policies select its pods by it.
        assert (url.hostname, url.port) == ("qdrant", 6333)
        secret = values["apiKey"]["valueFrom"]["secretKeyRef"]
        assert env_refs(gateway)["GATEWAY_GALLERY_API_KEY"] == (secret["name"], secret["key"])
    laptop = yaml.safe_load((K8S / "qdrant" / "values-cpu.yaml").read_text())
    assert laptop["config"]["storage"]["collection"]["replication_factor"] <= laptop["replicaCount"]


# --- the gRPC health probe script


def _probe_module() -> Any:
    spec = importlib.util.spec_from_file_location("grpc_health_probe", PROBE_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _RequireToken(grpc.ServerInterceptor):
    def __init__(self, token: str) -> None:
        self._token = token

    def intercept_service(self, continuation: Callable[..., Any], details: grpc.HandlerCallDetails) -> Any:
        if (("authorization", f"Bearer {self._token}")) in tuple(details.invocation_metadata or ()):
            return continuation(details)
        def refuse(request: Any, context: grpc.ServicerContext) -> None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "no token")
        return grpc.unary_unary_rpc_method_handler(refuse)


def _health_server(credentials: grpc.ServerCredentials | None = None, token: str | None = None) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(2), interceptors=[_RequireToken(token)] if token else [])
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    servicer.set("tattoo_search.v1.EmbedService/clip", health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_secure_port("127.0.0.1:0", credentials) if credentials else server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


@pytest.fixture
def probe(monkeypatch: pytest.MonkeyPatch) -> Any:
    for name in ("TLS_CERT_FILE", "TLS_KEY_FILE", "TLS_CLIENT_CA_FILE", "AUTH_TOKEN"):
        monkeypatch.delenv(f"EMBED_{name}", raising=False)
    return _probe_module()


def test_probe_reads_health_over_plaintext(probe: Any) -> None:
    server, port = _health_server()
    try:
        base = ["--port", str(port), "--env-prefix", "EMBED_", "--timeout-s", "5"]
        assert probe.main([*base, "--service", ""]) == 0
        assert probe.main([*base, "--service", "tattoo_search.v1.EmbedService/clip"]) == 1
        # Liveness: NOT_SERVING is still an answer.
        assert probe.main([*base, "--service", "tattoo_search.v1.EmbedService/clip", "--any-status"]) == 0
        assert probe.main([*base, "--service", "tattoo_search.v1.EmbedService/siglip", "--any-status"]) == 1  # unknown name
        # As the kubelet runs it: a file, its own interpreter.
        ran = subprocess.run([sys.executable, str(PROBE_SCRIPT), *base], capture_output=True, text=True, timeout=60)
        assert ran.returncode == 0, ran.stderr
    finally:
        server.stop(None)
    ran = subprocess.run([sys.executable, str(PROBE_SCRIPT), *base, "--any-status"],
                         capture_output=True, text=True, timeout=60)
    assert ran.returncode == 1 and "UNAVAILABLE" in ran.stderr


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl to make test certificates")
def test_probe_uses_the_servers_tls_files_and_token(probe: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # One CA, one certificate for localhost usable by server and client, as cert-manager
    # makes them in overlays/gpu.
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=test-ca", "-days", "1", cwd=tmp_path)
    _openssl("req", *ec, "-keyout", "tls.key", "-out", "tls.csr", "-subj", "/CN=localhost", cwd=tmp_path)
    (tmp_path / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
    _openssl("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", "tls.crt",
             "-days", "1", "-extfile", "ext.cnf", cwd=tmp_path)
    files = {name: (tmp_path / name).read_bytes() for name in ("ca.crt", "tls.crt", "tls.key")}
    credentials = grpc.ssl_server_credentials([(files["tls.key"], files["tls.crt"])], root_certificates=files["ca.crt"],
                                              require_client_auth=True)
    server, port = _health_server(credentials, token="s3cret")
    try:
        base = ["--port", str(port), "--env-prefix", "EMBED_", "--timeout-s", "5"]
        # Plaintext against a TLS server: no answer.
        assert probe.main(base) == 1
        monkeypatch.setenv("EMBED_TLS_CERT_FILE", str(tmp_path / "tls.crt"))
        monkeypatch.setenv("EMBED_TLS_KEY_FILE", str(tmp_path / "tls.key"))
        monkeypatch.setenv("EMBED_TLS_CLIENT_CA_FILE", str(tmp_path / "ca.crt"))
        assert probe.check(port, "EMBED_", "", False, 5.0)[1].endswith("UNAUTHENTICATED: no token")
        monkeypatch.setenv("EMBED_AUTH_TOKEN", "s3cret")
        assert probe.main(base) == 0
        assert probe.main([*base, "--service", "tattoo_search.v1.EmbedService/clip"]) == 1
        monkeypatch.setenv("EMBED_TLS_KEY_FILE", str(tmp_path / "missing.key"))
        healthy, said = probe.check(port, "EMBED_", "", False, 5.0)
        assert not healthy and "EMBED_TLS_" in said
    finally:
        server.stop(None)
