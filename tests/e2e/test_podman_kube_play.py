"""End-to-end: build the CPU image with podman, render the chart's sidecar mode, run the pod with
`podman kube play` (an app container + the guard sharing a Unix socket), and classify through
it: from the host over a published TCP port with a Python gRPC call, and from the app container
over the Unix socket with `guardwire classify`. Then drain (SIGTERM) and tear down.

Marker: e2e (slow; its own CI step). Needs root, podman (+ runc, catatonit) and helm; skipped
with the reason otherwise. The image is built with scripts/build-image (cached layers make a
rebuild take seconds); set GUARDWIRE_E2E_IMAGE=<ref> to use an existing image without building.

Two model sources are exercised:
  pvc   a tiny rigged test model (`guardwire make-test-model`, built on the host) in a podman
        volume, used as the chart's PersistentVolumeClaim (podman maps claimName to a named
        volume) and mounted read-only at /models, as in production;
  demo  model.source=demo, i.e. `guardwire serve --demo` inside the container.

Differences between podman 4.3 `kube play` and Kubernetes, handled here (not in the chart):
  - podman has no native sidecars (it refuses init containers with probes and would wait for
    them to exit), so init containers with `restartPolicy: Always` are moved to the front of
    `containers`, which is how podman runs them anyway: side by side in one pod;
  - emptyDir volumes are chowned to whichever container mounts them first and fsGroup is
    ignored, so the app runs with the guard's uid (10001) to share the socket directory;
  - a containerPort is also published on the host under the same number, so the gRPC port is a
    free ephemeral port;
  - gRPC probes are not run (podman only knows exec/http/tcp health checks); the test polls
    grpc.health.v1 itself.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from guardwire.v1 import conversation_pb2, guard_service_pb2, guard_service_pb2_grpc, verdict_pb2

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "guardwire"
CONTAINERS_CONF = REPO / "container" / "containers.conf"
IMAGE = os.environ.get("GUARDWIRE_E2E_IMAGE", "")
BUILD_IMAGE = "localhost/guardwire:cpu"
APP_OK = "E2E_APP_CLASSIFY_OK"


def _helm() -> str | None:
    for cand in (shutil.which("helm"), str(Path(sys.executable).parent / "helm")):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def _podman_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(CONTAINERS_CONF))
    return env


def podman(
    *args: str, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["podman", *args], env=_podman_env(), capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"podman {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def tools() -> str:
    if os.geteuid() != 0:
        pytest.skip("the e2e test needs root (root podman; rootless podman fails on this host)")
    if shutil.which("podman") is None:
        pytest.skip(
            "podman is not installed: apt-get install podman runc catatonit "
            "(scripts/build-image does it)"
        )
    helm = _helm()
    if helm is None:
        pytest.skip("helm is not installed: run scripts/install-helm-tools")
    return helm


@pytest.fixture(scope="session")
def image(tools: str) -> str:
    if IMAGE:
        podman("image", "exists", IMAGE)
        return IMAGE
    t0 = time.monotonic()
    proc = subprocess.run(
        [str(REPO / "scripts" / "build-image")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1500,
        env={**os.environ, "IMAGE": BUILD_IMAGE},
    )
    assert proc.returncode == 0, (
        f"scripts/build-image failed:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    )
    last = proc.stdout.strip().splitlines()[-2:]
    print(f"\nimage built in {time.monotonic() - t0:.0f} s: {last}")
    return BUILD_IMAGE


@pytest.fixture(scope="session")
def image_has_telemetry(image: str) -> bool:
    """Whether the image carries the `otel` extra (OpenTelemetry SDK + prometheus_client)."""
    proc = podman(
        "run",
        "--rm",
        "--entrypoint",
        "python",
        image,
        "-c",
        "import opentelemetry.sdk, prometheus_client",
        check=False,
        timeout=120,
    )
    return proc.returncode == 0


@pytest.fixture
def model_volume(tmp_path: Path) -> Iterator[str]:
    """A podman named volume holding a tiny rigged test model (the chart's PVC)."""
    name = f"guardwire-e2e-model-{os.getpid()}"
    model_dir = tmp_path / "model"
    proc = subprocess.run(
        [sys.executable, "-m", "guardwire_server", "make-test-model", str(model_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    podman("volume", "create", name)
    try:
        mountpoint = Path(
            podman("volume", "inspect", "--format", "{{.Mountpoint}}", name).stdout.strip()
        )
        shutil.copytree(model_dir, mountpoint, dirs_exist_ok=True)
        for p in [mountpoint, *mountpoint.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        yield name
    finally:
        podman("volume", "rm", "-f", name, check=False)


def render_pod(
    helm: str,
    image_ref: str,
    tmp_path: Path,
    *,
    grpc_port: int,
    host_port: int,
    model: dict[str, Any],
    metrics_port: int = 0,
    metrics_host_port: int = 0,
) -> Path:
    repo, _, tag = image_ref.rpartition(":")
    img = {"repository": repo, "tag": tag, "pullPolicy": "Never"}
    app_script = (
        "for i in $(seq 1 240); do\n"
        '  if guardwire classify "How do I bake bread?" --timeout 5; then\n'
        f"    echo {APP_OK}; break\n"
        "  fi\n"
        "  sleep 1\n"
        "done\n"
        "exec sleep 100000\n"
    )
    ports = [
        {
            "containerPort": grpc_port,
            "hostPort": host_port,
            "hostIP": "127.0.0.1",
            "protocol": "TCP",
        }
    ]
    if metrics_port:
        ports.append(
            {
                "containerPort": metrics_port,
                "hostPort": metrics_host_port,
                "hostIP": "127.0.0.1",
                "protocol": "TCP",
            }
        )
    values = {
        "mode": "sidecar",
        "telemetry": {
            "enabled": bool(metrics_port),
            "prometheusPort": metrics_port,
            "serviceName": "guardwire-e2e",
        },
        "image": img,
        "model": model,
        "uds": {"enabled": True},
        "grpc": {"port": grpc_port},
        "drainGraceSeconds": 5,
        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "3Gi"}},
        "config": {"threads": 1},
        "app": {
            "image": img,
            "command": ["/bin/sh", "-c"],
            "args": [app_script],
            "ports": ports,
            "securityContext": {"runAsUser": 10001, "runAsGroup": 10001},
        },
    }
    vf = tmp_path / "values.yaml"
    vf.write_text(yaml.safe_dump(values))
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(tmp_path / "hc"),
        "HELM_CONFIG_HOME": str(tmp_path / "hcfg"),
        "HELM_DATA_HOME": str(tmp_path / "hd"),
    }
    out = subprocess.run(
        [helm, "template", "e2e", str(CHART), "-f", str(vf)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    keep = [d for d in docs if d["kind"] in ("ConfigMap", "Deployment")]
    for doc in keep:
        if doc["kind"] != "Deployment":
            continue
        spec = doc["spec"]["template"]["spec"]
        inits = spec.get("initContainers", [])
        sidecars = [c for c in inits if c.get("restartPolicy") == "Always"]
        assert [c["name"] for c in sidecars] == ["guardwire"], "the chart renders a native sidecar"
        spec["initContainers"] = [c for c in inits if c.get("restartPolicy") != "Always"]
        if not spec["initContainers"]:
            del spec["initContainers"]
        for c in sidecars:
            del c["restartPolicy"]
        spec["containers"] = sidecars + spec["containers"]
    path = tmp_path / "pod.yaml"
    path.write_text(yaml.safe_dump_all(keep))
    return path


@contextlib.contextmanager
def kube_play(manifest: Path) -> Iterator[str]:
    """Plays the manifest, yields the pod name, always tears it down."""
    docs = list(yaml.safe_load_all(manifest.read_text()))
    configmaps = [d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"]
    deployment = next(d["metadata"]["name"] for d in docs if d["kind"] == "Deployment")
    try:
        podman("kube", "play", str(manifest), timeout=600)
        pods = podman("pod", "ps", "--format", "{{.Name}}").stdout.split()
        pod = next(p for p in pods if p.startswith(f"{deployment}-pod"))
        yield pod
    finally:
        podman("kube", "down", str(manifest), check=False, timeout=120)
        for name in configmaps:  # kube play keeps ConfigMap volumes
            podman("volume", "rm", "-f", name, check=False)


def wait_serving(target: str, timeout_s: float, pod: str) -> None:
    deadline = time.monotonic() + timeout_s
    last = ""
    with grpc.insecure_channel(target) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        while time.monotonic() < deadline:
            try:
                statuses = [
                    health.Check(health_pb2.HealthCheckRequest(service=s), timeout=2).status
                    for s in ("", "guardwire.v1.GuardService")
                ]
                if all(s == health_pb2.HealthCheckResponse.SERVING for s in statuses):
                    return
                last = f"statuses {statuses}"
            except grpc.RpcError as exc:
                last = f"{exc.code()}"
            if "model failed to load" in logs_of(pod, "guardwire"):
                last = "the guard could not load its model"
                break
            time.sleep(1)
    logs = logs_of(pod, "guardwire")[-4000:]
    state = podman(
        "ps", "-a", "--filter", f"pod={pod}", "--format", "{{.Names}} {{.Status}}", check=False
    ).stdout
    raise AssertionError(f"guard not SERVING ({last})\n{state}\n{logs}")


def classify(target: str) -> guard_service_pb2.ClassifyResponse:
    req = guard_service_pb2.ClassifyRequest(
        conversation=conversation_pb2.Conversation(
            turns=[
                conversation_pb2.Turn(
                    role=conversation_pb2.ROLE_USER, content="How do I bake bread?"
                )
            ]
        )
    )
    with grpc.insecure_channel(target) as ch:
        resp: guard_service_pb2.ClassifyResponse = guard_service_pb2_grpc.GuardServiceStub(
            ch
        ).Classify(req, timeout=30)
        return resp


def logs_of(pod: str, container: str) -> str:
    proc = podman("logs", f"{pod}-{container}", check=False)
    return proc.stdout + proc.stderr


@pytest.mark.parametrize("source", ["pvc", "demo"])
def test_kube_play_sidecar_classifies(
    tools: str,
    image: str,
    image_has_telemetry: bool,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    source: str,
) -> None:
    if source == "pvc":
        model = {"source": "pvc", "pvc": {"claimName": request.getfixturevalue("model_volume")}}
    else:
        model = {"source": "demo"}
    grpc_port, host_port = free_port(), free_port()
    metrics_port, metrics_host_port = (free_port(), free_port()) if image_has_telemetry else (0, 0)
    manifest = render_pod(
        tools,
        image,
        tmp_path,
        grpc_port=grpc_port,
        host_port=host_port,
        model=model,
        metrics_port=metrics_port,
        metrics_host_port=metrics_host_port,
    )
    target = f"127.0.0.1:{host_port}"
    with kube_play(manifest) as pod:
        t0 = time.monotonic()
        wait_serving(target, 300, pod)
        ready_s = time.monotonic() - t0

        # 1. from the host, over the published TCP port
        resp = classify(target)
        assert resp.verdict in (verdict_pb2.VERDICT_SAFE, verdict_pb2.VERDICT_UNSAFE)
        assert 0.0 <= resp.unsafe_score <= 1.0
        assert resp.model_id and resp.policy_id
        assert resp.assessed_role == conversation_pb2.ROLE_USER

        # 2. from the app container, over the Unix socket in the shared emptyDir
        deadline = time.monotonic() + 120
        while APP_OK not in logs_of(pod, "app") and time.monotonic() < deadline:
            time.sleep(1)
        app_logs = logs_of(pod, "app")
        assert APP_OK in app_logs, app_logs[-3000:]
        assert "unsafe_score=" in app_logs

        # 3. the guard runs as the non-root user with a read-only root fs and model
        probe = podman(
            "exec",
            f"{pod}-guardwire",
            "sh",
            "-c",
            "id -u; touch /x 2>/dev/null && echo ROOTFS_RW; "
            "touch /models/x 2>/dev/null && echo MODELS_RW; "
            "ls -l /var/run/guardwire/guardwire.sock; echo done",
        ).stdout
        assert probe.splitlines()[0] == "10001"
        assert "ROOTFS_RW" not in probe
        if source == "pvc":
            assert "MODELS_RW" not in probe, "the model volume must be mounted read-only"
        assert "srw-rw----" in probe, "socket mode 0660 (uds.mode -> unix_socket_mode)"

        # 4. telemetry from the chart's values: the Prometheus endpoint answers
        if metrics_port:
            url = f"http://127.0.0.1:{metrics_host_port}/metrics"
            with urllib.request.urlopen(url, timeout=10) as r:
                metrics = r.read().decode()
            assert "guardwire" in metrics, metrics[:2000]

        # 5. SIGTERM drains
        podman("pod", "stop", "-t", "30", pod, timeout=120)
        guard_logs = logs_of(pod, "guardwire")
        assert "draining" in guard_logs and "stopped" in guard_logs, guard_logs[-2000:]
    print(
        f"\n[{source}] telemetry={'on' if metrics_port else 'off (no otel extra)'}; "
        f"SERVING {ready_s:.1f} s after kube play; classify "
        f"verdict={verdict_pb2.Verdict.Name(resp.verdict)} score={resp.unsafe_score:.3f}"
    )
