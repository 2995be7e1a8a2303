"""Helm chart tests: lint, render each mode and the main value combinations, validate the output
against the Kubernetes schemas, and check that the rendered server config is accepted by the
server's own config validation.

Needs `helm` (scripts/install-helm-tools puts v3.17.2 into .venv/bin) and the PyPI package
`kubernetes-validate`; skipped with a reason when either is missing. Marker: helm.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from guardwire_server.config import OPTIONS, ConfigError, resolve_settings

pytestmark = pytest.mark.helm

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "guardwire"
EXAMPLE = CHART / "examples" / "app-with-guard"
# oldest supported (native sidecars on by default) and the newest schemas bundled
K8S_VERSIONS = ("1.29.0", "1.37.0")
# server options the chart sets itself (from grpc/uds, model, drainGraceSeconds, telemetry)
# instead of taking them from values.config
TELEMETRY_KEYS = {
    "otel_enabled",
    "otel_endpoint",
    "otel_service_name",
    "prometheus_port",
    "trace_conversations",
}
CHART_MANAGED = {"listen", "model", "drain_grace_s", "unix_socket_mode"} | TELEMETRY_KEYS
SERVER_HAS_TELEMETRY = TELEMETRY_KEYS <= {o.key for o in OPTIONS}
NO_TELEMETRY = (
    "this server/guardwire_server/config.py has no telemetry options (otel_*, prometheus_port) yet"
)
REQUIRED_SECURITY = {
    "runAsNonRoot": True,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
}


def _find_helm() -> str | None:
    for cand in (
        shutil.which("helm"),
        str(Path(sys.executable).parent / "helm"),
        str(REPO / ".venv" / "bin" / "helm"),
    ):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


HELM = _find_helm()


@pytest.fixture(scope="session")
def helm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    if HELM is None:
        pytest.skip("helm is not installed: run scripts/install-helm-tools")
    home = tmp_path_factory.mktemp("helm-home")
    env = dict(os.environ)
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        env[var] = str(home / var.lower())
    return env


@pytest.fixture(scope="session")
def kv() -> Any:
    return pytest.importorskip(
        "kubernetes_validate",
        reason="kubernetes-validate is not installed: run scripts/install-helm-tools",
    )


def helm(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert HELM is not None
    proc = subprocess.run([HELM, *args], env=env, capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stderr}")
    return proc


def values_file(tmp_path: Path, values: dict[str, Any], name: str = "values.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return path


def render(
    env: dict[str, str],
    tmp_path: Path,
    values: dict[str, Any],
    chart: Path = CHART,
    kube_version: str = "1.29.0",
) -> list[dict[str, Any]]:
    vf = values_file(tmp_path, values)
    out = helm(
        env,
        "template",
        "rel",
        str(chart),
        "--namespace",
        "guard",
        "--kube-version",
        kube_version,
        "-f",
        str(vf),
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def render_fails(env: dict[str, str], tmp_path: Path, values: dict[str, Any]) -> str:
    vf = values_file(tmp_path, values)
    proc = helm(env, "template", "rel", str(CHART), "-f", str(vf), check=False)
    assert proc.returncode != 0, f"rendering should have failed for {values}"
    return proc.stderr


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {[d['kind'] for d in docs]}"
    return found[0]


def rendered_config(docs: list[dict[str, Any]]) -> dict[str, Any]:
    cm = one(docs, "ConfigMap")
    data = yaml.safe_load(cm["data"]["config.yaml"])
    assert isinstance(data, dict)
    return data


def guard_container(pod_spec: dict[str, Any]) -> dict[str, Any]:
    for c in pod_spec.get("initContainers", []) + pod_spec["containers"]:
        if c["name"] == "guardwire":
            return c
    raise AssertionError("no guardwire container in the pod")


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        both = isinstance(v, dict) and isinstance(out.get(k), dict)
        out[k] = deep_merge(out[k], v) if both else v
    return out


PVC = {"model": {"source": "pvc", "pvc": {"claimName": "llama-guard-3-1b"}}}
DOWNLOAD = {
    "model": {
        "source": "download",
        "download": {
            "repo": "meta-llama/Llama-Guard-3-1B",
            "revision": "main",
            "tokenSecret": {"name": "hf-token"},
        },
    }
}
DOWNLOAD_PVC_CACHE = deep_merge(
    DOWNLOAD, {"model": {"path": "lg3-1b", "download": {"volume": {"claimName": "model-cache"}}}}
)
DEMO = {"model": {"source": "demo"}}
GPU = {"gpu": {"enabled": True, "runtimeClassName": "nvidia"}, "config": {"device": "cuda"}}

# (id, values): every mode with the main combinations (uds on/off, gpu, pvc vs download)
COMBOS: list[tuple[str, dict[str, Any]]] = [
    ("standalone-pvc", {"mode": "standalone", **PVC}),
    ("standalone-download-gpu", deep_merge({"mode": "standalone", **DOWNLOAD}, GPU)),
    (
        "standalone-demo-nohpa-nopdb-headless",
        {
            "mode": "standalone",
            **DEMO,
            "autoscaling": {"enabled": False},
            "pdb": {"enabled": False},
            "service": {"headless": True},
        },
    ),
    (
        "standalone-pdb-minavailable",
        {
            "mode": "standalone",
            **PVC,
            "pdb": {"minAvailable": "50%", "maxUnavailable": None},
            "autoscaling": {
                "targetCPUUtilizationPercentage": None,
                "metrics": [
                    {
                        "type": "Pods",
                        "pods": {
                            "metric": {"name": "guardwire_queue_depth"},
                            "target": {"type": "AverageValue", "averageValue": "8"},
                        },
                    }
                ],
            },
        },
    ),
    ("sidecar-tcp-pvc", {"mode": "sidecar", **PVC}),
    ("sidecar-uds-pvc", {"mode": "sidecar", **PVC, "uds": {"enabled": True}}),
    (
        "sidecar-uds-download-pvccache",
        {"mode": "sidecar", **DOWNLOAD_PVC_CACHE, "uds": {"enabled": True}},
    ),
    (
        "sidecar-uds-gpu-demo",
        deep_merge({"mode": "sidecar", **DEMO, "uds": {"enabled": True}}, GPU),
    ),
    ("library-uds", {"mode": "library", **PVC, "uds": {"enabled": True}}),
    (
        "standalone-telemetry-servicemonitor",
        {
            "mode": "standalone",
            **PVC,
            "telemetry": {
                "enabled": True,
                "otlpEndpoint": "http://otel-collector.observability:4317",
                "serviceName": "guard-pool",
                "prometheusPort": 9464,
            },
            "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
        },
    ),
    (
        "sidecar-uds-telemetry",
        {
            "mode": "sidecar",
            **PVC,
            "uds": {"enabled": True},
            "telemetry": {"enabled": True, "prometheusPort": 9464},
        },
    ),
    (
        "standalone-overrides",
        {
            "mode": "standalone",
            **PVC,
            "drainGraceSeconds": 45.5,
            "terminationGracePeriodSeconds": 90,
            "image": {"digest": "sha256:" + "a" * 64},
            "config": {
                "max_batch_size": 32,
                "prefix_cache_mb": 1048576,
                "threads": 4,
                "log_level": "debug",
                "revision": "abc123",
            },
            "extraEnv": [{"name": "GUARDWIRE_LOG_LEVEL", "value": "info"}],
            "nodeSelector": {"pool": "guard"},
            "imagePullSecrets": ["regcred"],
        },
    ),
]


@pytest.fixture(params=COMBOS, ids=[c[0] for c in COMBOS])
def combo(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    return request.param  # type: ignore[no-any-return]


def pod_specs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d["spec"]["template"]["spec"] for d in by_kind(docs, "Deployment")]


# ----------------------------------------------------------------------------- lint + render


def test_lint_strict_defaults(helm_env: dict[str, str]) -> None:
    proc = helm(helm_env, "lint", "--strict", str(CHART), "--set", "model.pvc.claimName=m")
    assert "0 chart(s) failed" in proc.stdout


def test_lint_and_render_combo(
    helm_env: dict[str, str], kv: Any, tmp_path: Path, combo: tuple[str, dict[str, Any]]
) -> None:
    _, values = combo
    vf = values_file(tmp_path, values)
    lint = helm(helm_env, "lint", "--strict", str(CHART), "-f", str(vf))
    assert "0 chart(s) failed" in lint.stdout, lint.stdout
    for version in K8S_VERSIONS:
        docs = render(helm_env, tmp_path, values, kube_version=version)
        assert docs
        for doc in docs:
            if doc["apiVersion"].startswith("monitoring.coreos.com/"):
                continue  # a CRD: checked in test_servicemonitor_and_metrics_port
            kv.validate(doc, version, strict=True)  # raises ValidationError

    kinds = sorted(d["kind"] for d in docs)
    mode = values["mode"]
    if mode == "standalone":
        assert {"Deployment", "Service", "ConfigMap", "ServiceAccount"} <= set(kinds)
        assert ("HorizontalPodAutoscaler" in kinds) == values.get("autoscaling", {}).get(
            "enabled", True
        )
        assert ("PodDisruptionBudget" in kinds) == values.get("pdb", {}).get("enabled", True)
        assert ("ServiceMonitor" in kinds) == values.get("serviceMonitor", {}).get("enabled", False)
    elif mode == "sidecar":
        assert kinds == ["ConfigMap", "Deployment", "ServiceAccount"]
    else:
        assert kinds == ["ConfigMap"], "library mode renders only the ConfigMap"


def test_rendered_config_accepted_by_server(
    helm_env: dict[str, str], tmp_path: Path, combo: tuple[str, dict[str, Any]]
) -> None:
    _, values = combo
    telemetry = values.get("telemetry", {})
    if telemetry.get("enabled") and not SERVER_HAS_TELEMETRY:
        pytest.skip(NO_TELEMETRY)
    docs = render(helm_env, tmp_path, values)
    data = rendered_config(docs)
    settings = resolve_settings(file_data=data)  # raises ConfigError on a bad key or value
    assert all(src in ("file", "default") for src in settings.sources.values())
    drain = values.get("drainGraceSeconds", 20)
    assert settings.drain_grace_s == drain
    assert f"0.0.0.0:{values.get('grpc', {}).get('port', 50051)}" in settings.listen
    if values.get("uds", {}).get("enabled"):
        assert "unix:/var/run/guardwire/guardwire.sock" in settings.listen
    else:
        assert not any(a.startswith("unix:") for a in settings.listen)
    source = values["model"]["source"]
    if source == "demo":
        assert "model" not in data
    else:
        path = values["model"].get("path")
        assert settings.model == ("/models/" + path if path else "/models")
    for key, val in values.get("config", {}).items():
        assert getattr(settings, key) == val, key
    assert getattr(settings, "otel_enabled", False) is telemetry.get("enabled", False)
    if telemetry.get("enabled"):
        assert settings.prometheus_port == telemetry["prometheusPort"]
        assert settings.otel_endpoint == telemetry.get("otlpEndpoint", "")
        assert settings.otel_service_name == (telemetry.get("serviceName") or "guardwire")
        assert settings.trace_conversations is False
    else:
        assert not set(data) & TELEMETRY_KEYS, "telemetry keys only when telemetry is on"


def test_probes_security_and_termination(
    helm_env: dict[str, str], tmp_path: Path, combo: tuple[str, dict[str, Any]]
) -> None:
    _, values = combo
    docs = render(helm_env, tmp_path, values)
    specs = pod_specs(docs)
    if values["mode"] == "library":
        assert not specs
        return
    assert len(specs) == 1
    spec = specs[0]
    guard = guard_container(spec)
    port = guard["ports"][0]
    assert port == {"name": "grpc", "containerPort": 50051, "protocol": "TCP"}
    # gRPC probes on the standard health service
    readiness = {"port": 50051, "service": "guardwire.v1.GuardService"}
    assert guard["readinessProbe"]["grpc"] == readiness
    assert guard["livenessProbe"]["grpc"] == {"port": 50051, "service": ""}
    assert guard["startupProbe"]["grpc"] == {"port": 50051, "service": ""}
    for c in spec.get("initContainers", []) + spec["containers"]:
        sc = c["securityContext"]
        for key, want in REQUIRED_SECURITY.items():
            assert sc[key] == want, (c["name"], key)
        assert sc["capabilities"]["drop"] == ["ALL"], c["name"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["automountServiceAccountToken"] is False
    # config mounted read-only, model read-only at /models, writable /tmp
    mounts = {m["name"]: m for m in guard["volumeMounts"]}
    assert mounts["guardwire-config"] == {
        "name": "guardwire-config",
        "mountPath": "/etc/guardwire",
        "readOnly": True,
    }
    assert mounts["guardwire-tmp"]["mountPath"] == "/tmp"
    if values["model"]["source"] in ("pvc", "download"):
        assert mounts["guardwire-model"]["mountPath"] == "/models"
        assert mounts["guardwire-model"]["readOnly"] is True
    else:
        assert "guardwire-model" not in mounts
    assert guard["args"][:2] == ["--config", "/etc/guardwire/config.yaml"]
    assert ("--demo" in guard["args"]) == (values["model"]["source"] == "demo")
    drain = values.get("drainGraceSeconds", 20)
    assert spec["terminationGracePeriodSeconds"] > drain
    if values.get("terminationGracePeriodSeconds") is None:
        assert spec["terminationGracePeriodSeconds"] == int(-(-drain // 1)) + 10
    # the pod rolls on config changes
    annotations = by_kind(docs, "Deployment")[0]["spec"]["template"]["metadata"]["annotations"]
    assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/guardwire-config"])


def test_sidecar_is_native_and_ordered(helm_env: dict[str, str], tmp_path: Path) -> None:
    values = {"mode": "sidecar", **DOWNLOAD, "uds": {"enabled": True}}
    docs = render(helm_env, tmp_path, values)
    spec = pod_specs(docs)[0]
    inits = spec["initContainers"]
    assert [c["name"] for c in inits] == ["guardwire-model-download", "guardwire"]
    assert "restartPolicy" not in inits[0], "the download is an ordinary (run-to-completion) init"
    assert inits[1]["restartPolicy"] == "Always"
    app = spec["containers"][0]
    assert app["name"] == "app"
    env = {e["name"]: e.get("value") for e in app["env"]}
    assert env["GUARDWIRE_TARGET"] == "unix:///var/run/guardwire/guardwire.sock"
    assert {"name": "guardwire-socket", "mountPath": "/var/run/guardwire"} in app["volumeMounts"]
    vols = {v["name"]: v for v in spec["volumes"]}
    assert vols["guardwire-socket"]["emptyDir"]["medium"] == "Memory"
    assert vols["guardwire-model"]["emptyDir"]["sizeLimit"] == "20Gi"
    genv = {e["name"]: e for e in inits[1]["env"]}
    assert "GUARDWIRE_UMASK" not in genv  # the server sets the socket mode itself
    config = rendered_config(docs)
    assert config["unix_socket_mode"] == "0660"
    assert "unix:/var/run/guardwire/guardwire.sock" in config["listen"]
    assert genv["HF_HUB_OFFLINE"]["value"] == "1"
    # the download: token from the Secret, hf CLI, into the (writable) model volume
    dl = inits[0]
    denv = {e["name"]: e for e in dl["env"]}
    assert denv["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "hf-token",
        "key": "HF_TOKEN",
        "optional": False,
    }
    assert denv["GW_REPO"]["value"] == "meta-llama/Llama-Guard-3-1B"
    assert denv["GW_REVISION"]["value"] == "main"
    assert 'hf "$@"' in dl["args"][0] and "huggingface-cli" in dl["args"][0]
    assert {"name": "guardwire-model", "mountPath": "/models"} in dl["volumeMounts"]

    tcp = pod_specs(render(helm_env, tmp_path, {"mode": "sidecar", **PVC}))[0]
    env = {e["name"]: e.get("value") for e in tcp["containers"][0]["env"]}
    assert env["GUARDWIRE_TARGET"] == "127.0.0.1:50051"
    assert "volumeMounts" not in tcp["containers"][0]


def test_download_script_runs(helm_env: dict[str, str], tmp_path: Path) -> None:
    """Runs the rendered download script with a fake `hf` on PATH: right arguments, marker
    written, and skipped on the second run."""
    spec = pod_specs(render(helm_env, tmp_path, {"mode": "standalone", **DOWNLOAD}))[0]
    dl = spec["initContainers"][0]
    bindir = tmp_path / "bin"
    bindir.mkdir()
    calls = tmp_path / "calls.txt"
    fake = bindir / "hf"
    fake.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$@" >> {calls}\n'
        'while [ $# -gt 0 ]; do [ "$1" = --local-dir ] && touch "$2/config.json"; '
        "shift; done\n"
    )
    fake.chmod(0o755)
    model_dir = tmp_path / "models"
    env = {e["name"]: e["value"] for e in dl["env"] if "value" in e}
    env.update(GW_DIR=str(model_dir), PATH=f"{bindir}:/usr/bin:/bin")
    for _ in range(2):
        proc = subprocess.run(
            [*dl["command"], dl["args"][0]], env=env, capture_output=True, text=True, timeout=30
        )
        assert proc.returncode == 0, proc.stderr
    args = calls.read_text().split("\n")
    assert args[:4] == ["download", "meta-llama/Llama-Guard-3-1B", "--local-dir", str(model_dir)]
    assert args.count("--include") == 6 and "*.safetensors" in args  # not glob-expanded
    assert args.count("download") == 1, "second run must skip (marker + config.json present)"
    assert (model_dir / ".guardwire-download").read_text() == "meta-llama/Llama-Guard-3-1B@main"


def test_gpu_resources_and_image(helm_env: dict[str, str], tmp_path: Path) -> None:
    docs = render(helm_env, tmp_path, deep_merge({"mode": "standalone", **PVC}, GPU))
    spec = pod_specs(docs)[0]
    guard = guard_container(spec)
    assert guard["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert guard["resources"]["limits"]["memory"] == "8Gi"
    assert guard["image"].endswith(":0.1.0-cuda")
    assert spec["runtimeClassName"] == "nvidia"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    cpu = guard_container(pod_specs(render(helm_env, tmp_path, {"mode": "standalone", **PVC}))[0])
    assert cpu["image"] == "localhost/guardwire:0.1.0-cpu"
    assert "nvidia.com/gpu" not in cpu["resources"].get("limits", {})


def test_standalone_service_hpa_pdb(helm_env: dict[str, str], tmp_path: Path) -> None:
    docs = render(helm_env, tmp_path, {"mode": "standalone", **PVC})
    dep, svc = one(docs, "Deployment"), one(docs, "Service")
    hpa, pdb = one(docs, "HorizontalPodAutoscaler"), one(docs, "PodDisruptionBudget")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert svc["spec"]["ports"] == [
        {
            "name": "grpc",
            "port": 50051,
            "targetPort": "grpc",
            "protocol": "TCP",
            "appProtocol": "kubernetes.io/h2c",
        }
    ]
    assert "replicas" not in dep["spec"], "the HPA owns the replica count"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": dep["metadata"]["name"],
    }
    assert hpa["spec"]["minReplicas"] == 2 and hpa["spec"]["maxReplicas"] == 10
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": pdb["spec"]["selector"]}
    assert "initContainers" not in dep["spec"]["template"]["spec"]
    assert "restartPolicy" not in guard_container(dep["spec"]["template"]["spec"])


# ----------------------------------------------------------------------------- rejections


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"mode": "daemonset"}, "mode"),
        ({"grpc": {"port": "grpc"}}, "grpc.port"),
        ({"grpc": {"port": 70000}}, "grpc.port"),
        ({"config": {"max_batch_sise": 8}}, "max_batch_sise"),
        ({"config": {"max_batch_size": 0}}, "max_batch_size"),
        ({"config": {"threshold": 1.5}}, "threshold"),
        ({"config": {"dtype": "int4"}}, "dtype"),
        ({"config": {"listen": ["0.0.0.0:1"]}}, "listen"),
        ({"model": {"source": "s3"}}, "model.source"),
        ({"uds": {"mode": "rwx"}}, "uds.mode"),
        ({"drainGraceSeconds": -1}, "drainGraceSeconds"),
        ({"gpu": {"enabled": "yes"}}, "gpu.enabled"),
        ({"replicas": 3}, "replicas"),
        ({"image": {"digest": "latest"}}, "image.digest"),
        ({"telemetry": {"otlpEndpoint": "otel-collector"}}, "otlpEndpoint"),
        ({"telemetry": {"enabled": "on"}}, "telemetry.enabled"),
    ],
)
def test_schema_rejects_bad_values(
    helm_env: dict[str, str], tmp_path: Path, values: dict[str, Any], message: str
) -> None:
    err = render_fails(helm_env, tmp_path, deep_merge(PVC, values))
    assert "schema" in err and message.split(".")[-1] in err, err
    vf = values_file(tmp_path, deep_merge(PVC, values), "lint.yaml")
    lint = helm(helm_env, "lint", "--strict", str(CHART), "-f", str(vf), check=False)
    assert lint.returncode != 0


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"model": {"source": "pvc"}}, "model.pvc.claimName"),
        ({"model": {"source": "download"}}, "model.download.repo"),
        ({**PVC, "terminationGracePeriodSeconds": 20}, "must be larger than drainGraceSeconds"),
        ({**PVC, "mode": "standalone", "uds": {"enabled": True}}, "uds.enabled only makes sense"),
        (
            {
                **PVC,
                "serviceMonitor": {"enabled": True},
                "telemetry": {"enabled": True, "prometheusPort": 0},
            },
            "needs telemetry.prometheusPort > 0",
        ),
        ({**PVC, "serviceMonitor": {"enabled": True}}, "serviceMonitor.enabled needs telemetry"),
        ({**PVC, "pdb": {"minAvailable": 1}}, "either minAvailable or maxUnavailable"),
    ],
)
def test_template_rejects_bad_combinations(
    helm_env: dict[str, str], tmp_path: Path, values: dict[str, Any], message: str
) -> None:
    assert message in render_fails(helm_env, tmp_path, values)


# ----------------------------------------------------------------------------- consistency


def test_schema_config_matches_server_options() -> None:
    """values.schema.json `config` is generated from server/guardwire_server/config.py OPTIONS."""
    proc = subprocess.run(
        [sys.executable, str(CHART / "ci" / "sync-config-schema.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    schema = json.loads((CHART / "values.schema.json").read_text())
    config = schema["properties"]["config"]
    assert set(config["properties"]) >= {o.key for o in OPTIONS} - CHART_MANAGED
    assert not set(config["properties"]) & CHART_MANAGED
    assert config["additionalProperties"] is False


def test_values_config_defaults_match_server() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    defaults = {o.key: o.default for o in OPTIONS}
    for key, val in values["config"].items():
        assert key in defaults and key not in CHART_MANAGED, key
        assert val == defaults[key], (
            f"values.yaml config.{key}={val!r}, server default {defaults[key]!r}"
        )
    assert values["drainGraceSeconds"] == defaults["drain_grace_s"]


def test_schema_defaults_and_app_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    m = re.search(r'define "guardwire.appVersion" -}}([^{]+){{', helpers)
    assert m and m.group(1) == chart["appVersion"], "guardwire.appVersion != Chart appVersion"
    pyproject = (REPO / "pyproject.toml").read_text()
    assert f'version = "{chart["appVersion"]}"' in pyproject


def _leaves(d: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for k, v in d.items():
        path = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict) and v:
            yield from _leaves(v, path)
        else:
            yield path


def test_every_value_documented() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()
    documented = set(re.findall(r"^\| `([^`]+)` \|", readme, flags=re.M))
    missing = []
    for leaf in _leaves(values):
        parts = leaf.split(".")
        ancestors = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
        ancestors |= {".".join(parts[:i]) + ".*" for i in range(1, len(parts))}
        if not ancestors & documented:
            missing.append(leaf)
    assert not missing, f"values not in the README table: {missing}"
    # and every top-level key of values.yaml has a comment right above it
    lines = (CHART / "values.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^([A-Za-z_]\w*):", line)
        if m:
            assert i > 0 and lines[i - 1].startswith("#"), (
                f"values.yaml line {i + 1} ({m.group(1)}) has no comment above it"
            )


def test_large_numbers_are_not_scientific(helm_env: dict[str, str], tmp_path: Path) -> None:
    docs = render(
        helm_env,
        tmp_path,
        {**PVC, "config": {"prefix_cache_mb": 10_000_000, "max_conversation_bytes": 2_000_000}},
    )
    text = one(docs, "ConfigMap")["data"]["config.yaml"]
    assert "e+" not in text
    settings = resolve_settings(file_data=yaml.safe_load(text))
    assert settings.prefix_cache_mb == 10_000_000


def test_resolve_settings_rejects_unknown_key() -> None:
    """Sanity check of the check itself: the server rejects what the chart must never write."""
    with pytest.raises(ConfigError):
        resolve_settings(file_data={"otlp_endpoint": "http://x:4317"})


def test_servicemonitor_and_metrics_port(helm_env: dict[str, str], tmp_path: Path) -> None:
    values = {
        "mode": "standalone",
        **PVC,
        "telemetry": {"enabled": True, "otlpEndpoint": "http://otel:4317", "prometheusPort": 9464},
        "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
    }
    docs = render(helm_env, tmp_path, values)
    sm, svc = one(docs, "ServiceMonitor"), one(docs, "Service")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "prom"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"] == {"matchNames": ["guard"]}
    assert sm["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}
    ]
    assert {"name": "metrics", "port": 9464, "targetPort": "metrics", "protocol": "TCP"} in svc[
        "spec"
    ]["ports"]
    guard = guard_container(pod_specs(docs)[0])
    assert {"name": "metrics", "containerPort": 9464, "protocol": "TCP"} in guard["ports"]
    data = rendered_config(docs)
    assert data["otel_enabled"] is True and data["prometheus_port"] == 9464
    if SERVER_HAS_TELEMETRY:
        settings = resolve_settings(file_data=data)
        assert settings.otel_endpoint == "http://otel:4317"
    # without telemetry: no metrics port anywhere
    plain = render(helm_env, tmp_path, {"mode": "standalone", **PVC})
    assert [p["name"] for p in one(plain, "Service")["spec"]["ports"]] == ["grpc"]
    assert [p["name"] for p in guard_container(pod_specs(plain)[0])["ports"]] == ["grpc"]


def test_include_api_from_parent_chart(helm_env: dict[str, str], kv: Any, tmp_path: Path) -> None:
    """examples/app-with-guard adds the sidecar to its own Deployment with the named templates."""
    parent = tmp_path / "app-with-guard"
    shutil.copytree(EXAMPLE, parent)
    chart_yaml = parent / "Chart.yaml"
    chart_yaml.write_text(chart_yaml.read_text().replace("file://../..", f"file://{CHART}"))
    helm(helm_env, "dependency", "update", str(parent))
    docs = render(helm_env, tmp_path, {}, chart=parent)
    for doc in docs:
        kv.validate(doc, K8S_VERSIONS[0], strict=True)
    assert sorted(d["kind"] for d in docs) == ["ConfigMap", "Deployment"]
    dep, cm = one(docs, "Deployment"), one(docs, "ConfigMap")
    spec = dep["spec"]["template"]["spec"]
    guard = guard_container(spec)
    assert guard["restartPolicy"] == "Always"
    config_vol = next(v for v in spec["volumes"] if v["name"] == "guardwire-config")
    assert config_vol["configMap"]["name"] == cm["metadata"]["name"]
    data = rendered_config(docs)
    assert data["max_batch_size"] == 8
    resolve_settings(file_data=data)
    chat = spec["containers"][0]
    assert {
        "name": "GUARDWIRE_TARGET",
        "value": "unix:///var/run/guardwire/guardwire.sock",
    } in chat["env"]
    assert spec["terminationGracePeriodSeconds"] > data["drain_grace_s"]
