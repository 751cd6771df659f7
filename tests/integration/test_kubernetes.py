"""deploy/kubernetes, checked without a cluster: every manifest validates against the
Kubernetes 1.37 JSON schemas (strict: no unknown fields), the kustomizations list files
that exist, the porch settings in the ConfigMaps pass `porch --check-config`, the timings
that make a rolling update lose nothing agree with each other, and the pod-termination
sequence (readiness turns 503, the shutdown delay passes while load still arrives, the
drain) runs against a real porch with zero failed requests. Worker counts follow a real
cgroup CPU quota where this machine lets the test create one."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
import tomllib
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from conftest import PORCH_BIN, ROOT, Porch, free_port, wait_for_port, wait_until

K8S = ROOT / "deploy" / "kubernetes"
K8S_VERSION = "1.37.0"
DOCKERFILE = ROOT / "examples" / "django" / "Dockerfile"


def documents() -> list[tuple[Path, dict]]:
    out = []
    for path in sorted(K8S.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((path, doc))
    return out


def by_kind(kind: str, name: str) -> dict:
    (doc,) = [d for _, d in documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def porch_toml(configmap: str) -> str:
    return by_kind("ConfigMap", configmap)["data"]["porch.toml"]


@pytest.mark.parametrize("path,doc", [
    pytest.param(p, d, id=f"{p.parent.name}/{p.name}:{d['kind']}") for p, d in documents()
    if d["kind"] != "Kustomization"
])
def test_manifest_validates_against_the_kubernetes_schema(path, doc):
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("kustomization", sorted(K8S.rglob("kustomization.yaml")),
                         ids=lambda p: p.parent.name)
def test_kustomization_lists_existing_files_and_every_manifest_beside_it(kustomization):
    k = yaml.safe_load(kustomization.read_text())
    assert k["kind"] == "Kustomization" and k["namespace"] == "bookstore"
    listed = set()
    for r in k["resources"]:
        target = (kustomization.parent / r).resolve()
        assert target.exists(), f"{kustomization}: {r} does not exist"
        listed.add(target)
    beside = {p.resolve() for p in kustomization.parent.glob("*.yaml") if p != kustomization}
    assert beside <= listed, f"not in {kustomization}: {beside - listed}"


def check_config(toml_text: str, tmp_path: Path, *app) -> subprocess.CompletedProcess:
    static = tmp_path / "staticfiles"
    static.mkdir(exist_ok=True)
    cfg = tmp_path / "porch.toml"
    cfg.write_text(toml_text.replace("/app/staticfiles", str(static)))
    return subprocess.run([PORCH_BIN, "--check-config", "-c", cfg, *app],
                          capture_output=True, text=True, timeout=60,
                          cwd=ROOT / "tests" / "apps",
                          env={**os.environ, "PYTHONPATH": str(ROOT / "tests" / "apps")})


@pytest.mark.parametrize("configmap,app", [("porch", ["wsgiapp:application"]), ("porch-front", [])])
def test_the_configmaps_porch_settings_are_accepted(configmap, app, tmp_path):
    r = check_config(porch_toml(configmap), tmp_path, *app)
    assert r.returncode == 0, r.stderr


def test_timings_let_endpoints_go_before_porch_stops_and_porch_exit_before_sigkill():
    web = by_kind("Deployment", "web")["spec"]["template"]["spec"]
    settings = tomllib.loads(porch_toml("porch"))
    ready = web["containers"][0]["readinessProbe"]
    noticed = ready["periodSeconds"] * ready["failureThreshold"]
    # The readiness probe sees 503 and endpoints are removed while porch still accepts.
    assert settings["shutdown_delay"] > noticed
    assert web["terminationGracePeriodSeconds"] > settings["shutdown_delay"] + settings["graceful_timeout"]
    # The liveness probe is not /healthz, which turns 503 on purpose while draining.
    assert web["containers"][0]["livenessProbe"]["httpGet"]["path"] == "/livez"
    strategy = by_kind("Deployment", "web")["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0
    # Migrations run in the Job, not in the replicas.
    assert "migrate" in by_kind("Job", "migrate")["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "entrypoint" not in " ".join(web["containers"][0]["command"])


def test_pods_run_as_the_images_users():
    text = DOCKERFILE.read_text()
    # The runtime stage's user `app`, the front stage's `porch`.
    app_uid = int(re.search(r"--uid (\d+) --gid app", text).group(1))
    porch_uid = int(re.search(r"--uid (\d+) --gid porch", text).group(1))
    for name, uid in [("web", app_uid), ("front", porch_uid)]:
        spec = by_kind("Deployment", name)["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsUser"] == uid
        c = spec["containers"][0]["securityContext"]
        assert c["readOnlyRootFilesystem"] and c["capabilities"]["drop"] == ["ALL"]
        assert not c["allowPrivilegeEscalation"]
        assert any(m["mountPath"] == "/tmp" for m in spec["containers"][0]["volumeMounts"])


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_admin_endpoints_the_probes_use_exist(porch):
    admin = free_port()
    p = porch("-w", "1", "--admin-bind", f"127.0.0.1:{admin}", "wsgiapp:application")
    assert get(f"http://127.0.0.1:{admin}/healthz") == 200
    assert get(f"http://127.0.0.1:{admin}/livez") == 200
    p.signal(signal.SIGTERM)
    p.wait(30)


def test_pod_termination_sequence_under_load_fails_no_request(porch, tmp_path):
    """What the kubelet and the endpoints controller do, played against a real porch: a
    load balancer that sends only to ready endpoints (polling /healthz as the readiness
    probe does, every 0.2 s), clients sending through it all along, TERM as the pod is
    deleted. Requests that were already on their way when readiness turned are served
    during shutdown_delay; none fails."""
    admin = free_port()
    p = porch("-w", "2", "--admin-bind", f"127.0.0.1:{admin}", "--shutdown-delay", "2",
              "--graceful-timeout", "10", "wsgiapp:application")
    ready = threading.Event()
    ready.set()
    stop = threading.Event()
    results: list[object] = []
    lock = threading.Lock()

    def probe():
        while not stop.is_set():
            if get(f"http://127.0.0.1:{admin}/healthz") != 200:
                # The endpoints controller and kube-proxy take a moment to act on it.
                time.sleep(0.5)
                ready.clear()
                return
            time.sleep(0.2)

    def client(i: int):
        n = 0
        while not stop.is_set() and ready.is_set():
            n += 1
            try:
                with urllib.request.urlopen(f"{p.url}/sleep?s=0.05&n={i}-{n}", timeout=15) as r:
                    out = r.status
            except Exception as e:  # noqa: BLE001 - every failure is what this test counts
                out = repr(e)
            with lock:
                results.append(out)

    threads = [threading.Thread(target=probe)] + [threading.Thread(target=client, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    before = len(results)
    p.signal(signal.SIGTERM)
    terminated = time.monotonic()
    assert wait_until(lambda: not ready.is_set(), 10), "readiness never turned"
    # Traffic sent after TERM (until the balancer noticed) was still served.
    after_term = len(results) - before
    for t in threads:
        t.join(30)
    stop.set()
    assert p.wait(30) == 0
    failed = [r for r in results if r != 200]
    assert not failed, f"{len(failed)} of {len(results)} requests failed: {failed[:5]}"
    assert before > 10 and after_term > 0, (before, after_term)
    assert time.monotonic() - terminated >= 2, "porch stopped before its shutdown delay"


def test_workers_follow_the_cgroup_cpu_quota(tmp_path):
    """porch started inside a cgroup limited to one CPU runs one worker, whatever the core
    count (a real cgroup v1 `cpu` controller or v2, created for the test)."""
    v1 = Path("/sys/fs/cgroup/cpu")
    v2 = Path("/sys/fs/cgroup")
    name = f"porch-test-{uuid.uuid4().hex[:8]}"
    if (v1 / "cpu.cfs_quota_us").exists() and os.access(v1, os.W_OK):
        group = v1 / name
        setup = [("cpu.cfs_period_us", "100000"), ("cpu.cfs_quota_us", "100000")]
    elif (v2 / "cgroup.controllers").exists() and "cpu" in (v2 / "cgroup.subtree_control").read_text() \
            and os.access(v2, os.W_OK):
        group = v2 / name
        setup = [("cpu.max", "100000 100000")]
    else:
        pytest.skip("no writable cgroup cpu controller here")
    try:
        group.mkdir()
    except OSError as e:
        pytest.skip(f"cannot create a cgroup here: {e}")
    try:
        for f, v in setup:
            (group / f).write_text(v)
        port = free_port()
        wrap = ["sh", "-c", f'echo $$ > {group}/cgroup.procs && exec "$@"', "sh"]
        p = Porch(["--bind", f"127.0.0.1:{port}", "wsgiapp:application"], wrap=wrap,
                  bind=False)
        try:
            wait_for_port(port, p.proc, 30)
            assert wait_until(lambda: "serving" in p.log(), 30), p.log()
            assert "with 1 worker(s)" in p.log(), p.log()
        finally:
            p.stop()
    finally:
        for _ in range(50):
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)
