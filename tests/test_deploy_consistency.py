"""The deploy pieces agree with the code and with each other, and pass their linters.

Fails when a setting, a route, a port, a topic, a consumer group or a CLI command named in
Dockerfile / docker-compose.yml / deploy/** drifts from ml/settings.py, iris_scorer/cli.py, app/ or
consumers/. Linters (hadolint, actionlint, kubernetes-validate, checkov) run from .venv-tools
(requirements-tools.txt); kustomize renders need kubectl. Missing tools skip with a reason.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from packaging.requirements import Requirement

from consumers.kafka_config import build_kafka_config
from iris_scorer.cli import app as cli_app
from ml.settings import Settings, env_name, load_settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
TOOLS = ROOT / ".venv-tools" / "bin"
KUSTOMIZATIONS = ["base", "overlays/local", "overlays/aks", "jobs/backfill", "jobs/train", "jobs/spark"]
OVERLAYS = ["overlays/local", "overlays/aks"]
PARTITIONS = 4
SETTINGS_VARS = {env_name(name) for name in Settings.model_fields}

# Routes of each role (ARCHITECTURE.md); compared with the apps' own routes when importable.
REST_ROUTES = {"/health", "/ready", "/metrics", "/model", "/predict", "/invocations"}
WORKER_ROUTES = {"/health", "/ready", "/metrics", "/drift/latest"}


# ------------------------------------------------------------------------------ helpers


def tool(name: str) -> str:
    path = TOOLS / name
    if not path.exists():
        pytest.skip(
            f"{path} missing: create it with `python3 -m venv .venv-tools && "
            ".venv-tools/bin/pip install -r requirements-tools.txt`"
        )
    return str(path)


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@functools.cache
def render(kustomization: str) -> tuple[dict[str, Any], ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: cannot render the kustomizations")
    out = subprocess.run(
        [kubectl, "kustomize", str(K8S / kustomization)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, f"kubectl kustomize {kustomization} failed:\n{out.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


def of_kind(docs: tuple[dict[str, Any], ...] | list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def named(docs: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    found = [doc for doc in of_kind(docs, kind) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


@functools.cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def cli_commands() -> dict[str, Any]:
    return dict(typer.main.get_command(cli_app).commands)  # type: ignore[attr-defined]


def cli_options(command: str) -> set[str]:
    return {opt for param in cli_commands()[command].params for opt in param.opts}


def assert_real_invocation(args: list[str], where: str) -> None:
    """``args`` (after the ``iris-scorer`` entrypoint) names a real subcommand and real options."""
    commands = cli_commands()
    assert args and args[0] in commands, (
        f"{where}: {args[:1]} is not an iris-scorer command ({sorted(commands)})"
    )
    options = cli_options(args[0])
    for arg in args[1:]:
        if arg.startswith("--"):
            flag = arg.split("=", 1)[0]
            assert flag in options, f"{where}: iris-scorer {args[0]} has no option {flag} ({sorted(options)})"


def option_value(args: list[str], flag: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def iris_services() -> dict[str, dict[str, Any]]:
    """Compose services running our image with the iris-scorer entrypoint."""
    return {
        name: svc
        for name, svc in compose()["services"].items()
        if svc.get("image", "").startswith("iris-scorer") and "entrypoint" not in svc
    }


def app_routes(role: str) -> set[str]:
    """Paths the real app serves, or the documented set when the app is not importable."""
    try:
        if role == "rest":
            from app.server import create_app
            from ml.settings import Settings as S

            return {route.path for route in create_app(S()).routes}  # type: ignore[attr-defined]
        from consumers.worker import WorkerState, create_http_app
        from ml.metrics import Metrics
        from ml.model import ModelHolder

        return {
            route.path
            for route in create_http_app(WorkerState(holder=ModelHolder(), metrics=Metrics())).routes
        }  # type: ignore[attr-defined]
    except (ImportError, TypeError):
        return REST_ROUTES if role == "rest" else WORKER_ROUTES


# ------------------------------------------------------------------------------ settings


def settings_sources() -> list[tuple[str, dict[str, str]]]:
    sources = [(f"{path.relative_to(ROOT)}", env_file(path)) for path in K8S.rglob("*.env")]
    for name, svc in compose()["services"].items():
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(item.split("=", 1) for item in env)
        sources.append((f"docker-compose.yml service {name}", {k: str(v) for k, v in env.items()}))
    return sources


def test_every_iris_variable_is_a_settings_field() -> None:
    checked = 0
    for where, env in settings_sources():
        for key in env:
            if key.startswith("IRIS_"):
                checked += 1
                assert key in SETTINGS_VARS, f"{where}: {key} is not a Settings field (ml/settings.py)"
    assert checked > 20


@pytest.mark.parametrize("source", [s[0] for s in settings_sources()])
def test_settings_values_validate(source: str) -> None:
    env = dict(settings_sources())[source]
    relevant = {k: v for k, v in env.items() if k in SETTINGS_VARS}
    load_settings(relevant)  # raises SettingsError naming the variable


def test_rendered_configmaps_hold_only_settings_and_validate() -> None:
    for kustomization in OVERLAYS:
        config = named(render(kustomization), "ConfigMap", "iris-settings")["data"]
        unknown = {k for k in config if k not in SETTINGS_VARS}
        assert not unknown, f"{kustomization}: iris-settings has non-settings keys {unknown}"
        load_settings(config)


def test_settings_env_matches_settings_defaults_for_topics_and_group() -> None:
    defaults = Settings()
    base = env_file(K8S / "base" / "settings.env")
    for field in (
        "requests_topic",
        "predictions_topic",
        "dlq_topic",
        "drift_topic",
        "consumer_group",
        "model_uri",
    ):
        assert base[env_name(field)] == getattr(defaults, field), field


# ------------------------------------------------------------------------------ Kubernetes


def containers(
    docs: tuple[dict[str, Any], ...], kind: str = "Deployment"
) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    found = []
    for doc in of_kind(docs, kind):
        pod = doc["spec"]["template"]
        for container in pod["spec"]["containers"]:
            found.append((doc["metadata"]["name"], pod, container))
    return found


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_kustomization_renders(kustomization: str) -> None:
    docs = render(kustomization)
    assert docs
    assert all(
        doc["metadata"].get("namespace") == "iris-scorer" for doc in docs if doc["kind"] != "Namespace"
    ), f"{kustomization}: an object outside namespace iris-scorer"
    assert not of_kind(docs, "Secret"), f"{kustomization}: Secrets are created by hand, never committed"


@pytest.mark.parametrize("kustomization", OVERLAYS)
def test_probes_ports_and_commands_match_the_apps(kustomization: str) -> None:
    docs = render(kustomization)
    roles = {"iris-rest": ("rest", "--port", "8000"), "iris-worker": ("worker", "--http-port", "8001")}
    for name, (role, port_flag, default_port) in roles.items():
        deployment = named(docs, "Deployment", name)
        pod = deployment["spec"]["template"]
        container = pod["spec"]["containers"][0]
        args = container["args"]
        assert_real_invocation(args, f"{kustomization} {name}")
        assert args[0] == ("serve" if role == "rest" else "worker")
        port = int(option_value(args, port_flag) or default_port)
        assert option_value(args, "--host" if role == "rest" else "--http-host") == "0.0.0.0", name
        assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": port}
        assert container["livenessProbe"]["httpGet"]["path"] == "/health"
        assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
        routes = app_routes(role)
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            get = container[probe]["httpGet"]
            assert get["path"] in routes, f"{name} {probe} {get['path']} is not a route of {role}"
            assert get["port"] in ("http", port)
        annotations = pod["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(port)
        assert annotations["prometheus.io/path"] == "/metrics" and "/metrics" in routes
        service = named(docs, "Service", name)
        assert service["spec"]["ports"][0]["port"] == port
        assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()


def test_documented_routes_exist_in_the_apps() -> None:
    assert app_routes("rest") >= REST_ROUTES
    assert app_routes("worker") >= WORKER_ROUTES


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_pods_are_locked_down(kustomization: str) -> None:
    docs = render(kustomization)
    for kind in ("Deployment", "Job"):
        for name, pod, container in containers(docs, kind):
            if name.startswith("kafka"):
                continue  # the local-only Kafka broker image needs its own uid and a writable /opt/kafka
            spec = pod["spec"]
            assert spec["securityContext"]["runAsNonRoot"] is True, name
            assert spec["securityContext"]["runAsUser"] == 10001, name
            assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
            assert spec.get("automountServiceAccountToken") is False, name
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert {"requests", "limits"} <= set(container["resources"]), name
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{name}: /tmp must be an emptyDir on a read-only root"
            for env in container.get("env", []):
                assert "value" in env or "valueFrom" in env, name
                if re.search(r"PASSWORD|API_KEY|SECRET", env["name"]) and "valueFrom" in env:
                    assert "secretKeyRef" in env["valueFrom"], (
                        f"{name}: {env['name']} must come from a Secret"
                    )
                if re.search(r"PASSWORD|API_KEY|SECRET", env["name"]):
                    assert "value" not in env, f"{name}: {env['name']} has a committed value"


@pytest.mark.parametrize("kustomization", ["overlays/local", "overlays/aks"])
def test_reports_dir_is_a_writable_volume(kustomization: str) -> None:
    docs = render(kustomization)
    reports = named(docs, "ConfigMap", "iris-settings")["data"]["IRIS_REPORTS_DIR"]
    for name in ("iris-rest", "iris-worker"):
        container = named(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]
        assert reports in {m["mountPath"] for m in container["volumeMounts"]}, name


@pytest.mark.parametrize("kustomization", OVERLAYS)
def test_scaled_object_follows_the_worker(kustomization: str) -> None:
    docs = render(kustomization)
    config = named(docs, "ConfigMap", "iris-settings")["data"]
    scaled = named(docs, "ScaledObject", "iris-worker")
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == "iris-worker"
    named(docs, "Deployment", spec["scaleTargetRef"]["name"])
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["consumerGroup"] == config["IRIS_CONSUMER_GROUP"] == Settings().consumer_group
    assert meta["topic"] == config["IRIS_REQUESTS_TOPIC"] == Settings().requests_topic
    assert meta["bootstrapServers"] == config["IRIS_KAFKA_BOOTSTRAP_SERVERS"]
    assert int(meta["lagThreshold"]) > int(meta["activationLagThreshold"]) >= 0
    assert all(isinstance(v, str) for v in meta.values()), "KEDA metadata values are strings"
    # KEDA counts a partition with no committed offset the way the worker will read it: from the
    # start (earliest: its whole log is lag) or from the end (latest: no lag).
    reset = build_kafka_config(Settings()).consumer_options()["auto_offset_reset"]
    assert meta["offsetResetPolicy"] == reset, (
        "KEDA's offsetResetPolicy must match the worker's auto_offset_reset"
    )
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= PARTITIONS
    if config.get("IRIS_KAFKA_SECURITY_PROTOCOL") == "SASL_SSL":
        auth_name = trigger["authenticationRef"]["name"]
        auth = named(docs, "TriggerAuthentication", auth_name)
        params = {ref["parameter"]: ref for ref in auth["spec"]["secretTargetRef"]}
        assert set(params) == {"sasl", "tls", "username", "password"}
        assert all(ref["name"] and ref["key"] for ref in params.values())
    else:
        assert "authenticationRef" not in trigger


@pytest.mark.parametrize("kustomization", OVERLAYS)
def test_crds_have_their_required_fields(kustomization: str) -> None:
    """KEDA and Prometheus Operator CRDs are not in kubernetes-validate's schemas: check by hand."""
    docs = render(kustomization)
    pod_labels = [d["spec"]["template"]["metadata"]["labels"] for d in of_kind(docs, "Deployment")]
    for monitor in of_kind(docs, "PodMonitor"):
        assert monitor["apiVersion"] in {"monitoring.coreos.com/v1", "azmonitoring.coreos.com/v1"}
        (expression,) = monitor["spec"]["selector"]["matchExpressions"]
        selected = [labels for labels in pod_labels if labels.get(expression["key"]) in expression["values"]]
        assert len(selected) == 2, f"{monitor['metadata']['name']} selects {len(selected)} deployments"
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    for rule in of_kind(docs, "PrometheusRule"):
        for group in rule["spec"]["groups"]:
            assert group["name"] and all(r["alert"] and r["expr"] for r in group["rules"])
    for auth in of_kind(docs, "TriggerAuthentication"):
        assert auth["apiVersion"] == "keda.sh/v1alpha1"


def test_hpa_and_pdb_target_the_rest_deployment() -> None:
    docs = render("overlays/aks")
    hpa = named(docs, "HorizontalPodAutoscaler", "iris-rest")
    pdb = named(docs, "PodDisruptionBudget", "iris-rest")
    rest = named(docs, "Deployment", "iris-rest")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "iris-rest"
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]
    labels = rest["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_backfill_job_is_indexed_and_sharded() -> None:
    job = named(render("jobs/backfill"), "Job", "iris-backfill")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    args = spec["template"]["spec"]["containers"][0]["args"]
    assert option_value(args, "--shard") == f"$(JOB_COMPLETION_INDEX)/{spec['completions']}"
    assert "$(JOB_COMPLETION_INDEX)" in (option_value(args, "--output") or ""), (
        "shards must not share an output"
    )
    assert_real_invocation(args, "jobs/backfill")


def test_train_job_runs_the_real_command() -> None:
    job = named(render("jobs/train"), "Job", "iris-train")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert_real_invocation(container["args"], "jobs/train")
    assert container["workingDir"] in {m["mountPath"] for m in container["volumeMounts"]}


#: custom resources kubernetes-validate has no schema for (KEDA, the Prometheus operator, the
#: spark-operator); their fields are checked against our CLI and settings by the tests above
CRD_GROUPS = {"keda.sh", "monitoring.coreos.com", "azmonitoring.coreos.com", "sparkoperator.k8s.io"}


# jobs/spark holds only a SparkApplication (a custom resource): nothing for kubernetes-validate
@pytest.mark.parametrize("kustomization", [k for k in KUSTOMIZATIONS if k != "jobs/spark"])
def test_kubernetes_validate(kustomization: str, tmp_path: Path) -> None:
    validator = tool("kubernetes-validate")
    docs = [d for d in render(kustomization) if d["apiVersion"].split("/")[0] not in CRD_GROUPS]
    path = tmp_path / "rendered.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    out = subprocess.run(
        [validator, "--strict", "-k", "1.32", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "passed for resource" in out.stdout + out.stderr


def test_kubernetes_validate_rejects_a_broken_object(tmp_path: Path) -> None:
    validator = tool("kubernetes-validate")
    bad = named(render("base"), "Deployment", "iris-rest")
    bad = json.loads(json.dumps(bad))
    bad["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "eight thousand"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    out = subprocess.run(
        [validator, "--strict", "-k", "1.32", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode != 0


def test_overlay_replacement_files_are_identical() -> None:
    copies = {path.read_text() for path in (K8S / "overlays").glob("*/scaledobject-replacements.yaml")}
    assert len(copies) == 1


# ------------------------------------------------------------------------------ docker compose


def test_compose_commands_are_real_subcommands() -> None:
    services = iris_services()
    assert {"train", "rest", "worker"} <= set(services)
    for name, svc in services.items():
        assert_real_invocation(list(svc["command"]), f"compose service {name}")


def test_compose_healthchecks_and_ports_match_commands() -> None:
    services = compose()["services"]
    rest, worker = services["rest"], services["worker"]
    assert rest["environment"]["HEALTHCHECK_PORT"] == option_value(rest["command"], "--port") == "8000"
    assert (
        worker["environment"]["HEALTHCHECK_PORT"] == option_value(worker["command"], "--http-port") == "8001"
    )
    assert (
        option_value(rest["command"], "--host") == option_value(worker["command"], "--http-host") == "0.0.0.0"
    )
    assert services["train"]["healthcheck"] == {"disable": True}
    mlflow_port = next(a for a in services["mlflow"]["command"] if a.startswith("--port=")).split("=")[1]
    assert services["mlflow"]["environment"]["HEALTHCHECK_PORT"] == mlflow_port
    assert rest["environment"]["MLFLOW_TRACKING_URI"] == f"http://mlflow:{mlflow_port}"


def test_compose_start_order() -> None:
    services = compose()["services"]
    worker = services["worker"]["depends_on"]
    assert worker["train"]["condition"] == "service_completed_successfully"
    assert worker["kafka"]["condition"] == "service_healthy"
    assert worker["kafka-topics"]["condition"] == "service_completed_successfully"
    assert services["train"]["depends_on"]["mlflow"]["condition"] == "service_healthy"
    assert services["kafka-topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_compose_creates_the_settings_topics_with_four_partitions() -> None:
    script = "\n".join(compose()["services"]["kafka-topics"]["command"])
    defaults = Settings()
    topics = re.search(r"for topic in ([^;]+);", script)
    assert topics is not None
    assert set(topics.group(1).split()) == {
        defaults.requests_topic,
        defaults.predictions_topic,
        defaults.dlq_topic,
        defaults.drift_topic,
        defaults.shadow_topic,
        defaults.feedback_topic,
        defaults.feedback_dlq_topic,
        defaults.performance_topic,
    }
    assert f"--partitions {PARTITIONS}" in script
    local_job = named(render("overlays/local"), "Job", "kafka-topics")
    local_script = local_job["spec"]["template"]["spec"]["containers"][0]["args"][0]
    local_topics = re.search(r"for topic in ([^;]+);", local_script)
    assert local_topics is not None and local_topics.group(1).split() == topics.group(1).split()
    assert f"--partitions {PARTITIONS}" in local_script


def test_prometheus_scrapes_the_compose_services() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    services = compose()["services"]
    assert f"rest:{option_value(services['rest']['command'], '--port')}" in targets
    assert f"worker:{option_value(services['worker']['command'], '--http-port')}" in targets
    for target in targets:
        assert target.split(":")[0] in services, f"prometheus scrapes unknown service {target}"
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    mounts = services["prometheus"]["volumes"]
    assert "./deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in mounts


def test_grafana_provisioning_points_at_the_dashboards() -> None:
    grafana = compose()["services"]["grafana"]
    providers = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "dashboards.yml").read_text()
    )
    path = providers["providers"][0]["options"]["path"]
    assert f"./deploy/grafana/dashboards:{path}:ro" in grafana["volumes"]
    datasource = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    assert "prometheus" in compose()["services"]


def test_compose_config_when_docker_compose_is_available() -> None:
    docker = shutil.which("docker")
    if (
        docker is None
        or subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode
    ):
        pytest.skip("the docker compose plugin is not installed (YAML is checked by the other tests)")
    out = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr


# ------------------------------------------------------------------------------ Dockerfile


def dockerfile() -> str:
    return DOCKERFILE.read_text()


def test_image_runs_as_non_root_with_the_cli_entrypoint() -> None:
    text = dockerfile()
    final = text.split("FROM runtime AS iris-scorer")
    assert len(final) == 2, "the last stage is the scorer image (default target)"
    runtime = text.split(" AS runtime", 1)[1].split("\nFROM ", 1)[0]
    assert "USER 10001:10001" in runtime
    assert 'ENTRYPOINT ["iris-scorer"]' in runtime
    assert 'CMD ["serve", "--host", "0.0.0.0"]' in runtime
    assert "HEALTHCHECK" in runtime and "/health" in runtime
    assert "gcc" not in runtime and "build-essential" not in runtime
    assert re.findall(r"^FROM (python:[^ ]+)", text, re.M) == ["python:3.11.14-slim-bookworm"] * 2


def test_dev_only_packages_are_not_runtime_dependencies() -> None:
    """The names the image leaves out are in the lock and needed by nothing at run time."""

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    runtime: set[str] = set()

    def walk(name: str, extras: tuple[str, ...] = ()) -> None:
        key = norm(name)
        if (key, extras) in seen:
            return
        seen.add((key, extras))
        runtime.add(key)
        try:
            requires = distribution(name).requires or []
        except PackageNotFoundError:
            return
        for line in requires:
            req = Requirement(line)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in (extras or ("",))):
                walk(req.name, tuple(sorted(req.extras)))

    seen: set[tuple[str, tuple[str, ...]]] = set()
    walk("iris-scorer")
    lock = {
        norm(line.split("==")[0])
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if "==" in line
    }
    dev_only = [
        line.strip()
        for line in (DEPLOY / "docker" / "dev-only-packages.txt").read_text().splitlines()
        if line.strip()
    ]
    assert dev_only
    for name in dev_only:
        assert norm(name) in lock, f"{name} is not in requirements.lock"
        assert norm(name) not in runtime, (
            f"{name} is needed at run time: remove it from dev-only-packages.txt"
        )


def test_dockerignore_lets_every_copied_path_in() -> None:
    allowed = {line[1:] for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")}
    for line in dockerfile().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            sources = [part for part in line.split()[1:-1] if not part.startswith("--")]
            for source in sources:
                assert source.rstrip("/") in allowed, (
                    f".dockerignore excludes {source}, which the Dockerfile copies"
                )
                assert (ROOT / source).exists() or source == "README.md", f"COPY {source}: no such path"


def test_dvc_runs_without_git_in_the_image() -> None:
    assert "no_scm = true" in dockerfile()
    assert "COPY --chown=10001:10001 dvc.yaml params.yaml ./" in dockerfile()


def test_hadolint() -> None:
    out = subprocess.run(
        [tool("hadolint"), str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    out = subprocess.run(
        [tool("hadolint"), str(bad)], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode != 0 and "DL3013" in out.stdout


# ------------------------------------------------------------------------------ workflows


WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def test_workflows_exist() -> None:
    assert {p.name for p in WORKFLOWS} >= {"tests.yml", "build.yml", "deploy.yml", "observability.yml"}


def test_actionlint() -> None:
    out = subprocess.run(
        [tool("actionlint"), "-no-color", *map(str, WORKFLOWS)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_actionlint_catches_a_bad_workflow(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    steps:\n      - run: echo ${{ github.nope }}\n"
    )
    out = subprocess.run(
        [tool("actionlint"), "-no-color", str(bad)], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode != 0


def test_build_uses_oidc_and_the_commit_sha() -> None:
    build = yaml.safe_load((ROOT / ".github" / "workflows" / "build.yml").read_text())
    job = build["jobs"]["build"]
    assert build["permissions"]["id-token"] == "write"
    uses = [step.get("uses", "") for step in job["steps"]]
    assert any(u.startswith("azure/login@") for u in uses)
    tags = [
        step["with"]["tags"]
        for step in job["steps"]
        if step.get("uses", "").startswith("docker/build-push-action")
    ]
    assert tags and all(tag.endswith(":${{ github.sha }}") for tag in tags)
    assert not re.search(
        r"(password|client-secret|creds)\s*:", (ROOT / ".github" / "workflows" / "build.yml").read_text()
    )


def test_deploy_sets_the_images_that_build_pushes() -> None:
    deploy = (ROOT / ".github" / "workflows" / "deploy.yml").read_text()
    images = {
        i["name"]
        for i in yaml.safe_load((K8S / "overlays" / "aks" / "kustomization.yaml").read_text())["images"]
    }
    for image in images:
        assert f'kustomize edit set image "{image}=' in deploy, image
    assert "rollout status" in deploy and "/ready" in deploy


# ------------------------------------------------------------------------------ Azure / Terraform


def test_terraform_hubs_match_the_settings_topics() -> None:
    main = (DEPLOY / "azure" / "main.tf").read_text()
    defaults = Settings()
    for topic in (
        defaults.requests_topic,
        defaults.predictions_topic,
        defaults.dlq_topic,
        defaults.drift_topic,
    ):
        assert f'"{topic}"' in main, f"no Event Hub for {topic}"
    variables = (DEPLOY / "azure" / "variables.tf").read_text()
    partitions = re.search(r'variable "partitions" \{[^}]*default\s*=\s*(\d+)', variables, re.S)
    group = re.search(r'variable "consumer_group" \{[^}]*default\s*=\s*"([^"]+)"', variables, re.S)
    assert partitions and int(partitions.group(1)) == PARTITIONS
    assert group and group.group(1) == defaults.consumer_group
    assert "keda_enabled = true" in main and "oidc_issuer_enabled       = true" in main


def test_terraform_outputs_write_the_overlay_env_files() -> None:
    outputs = (DEPLOY / "azure" / "outputs.tf").read_text()
    for output, path in (("iris_settings_env", "azure.env"), ("mlflow_env", "mlflow-azure.env")):
        block = re.search(rf'output "{output}" \{{.*?<<-EOT\n(.*?)\n\s*EOT', outputs, re.S)
        assert block, output
        keys = {line.strip().split("=", 1)[0] for line in block.group(1).splitlines() if line.strip()}
        assert keys == set(env_file(K8S / "overlays" / "aks" / path)), (
            f"{output} and {path} list different keys"
        )


def test_terraform_fmt() -> None:
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("terraform is not installed")
    out = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", str(DEPLOY / "azure")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, f"terraform fmt would change: {out.stdout}"


# ------------------------------------------------------------------------------ secrets


def test_no_secret_values_are_committed() -> None:
    patterns = [r"SharedAccessKey=", r"Endpoint=sb://", r"AccountKey=", r"-----BEGIN [A-Z ]*PRIVATE KEY"]
    files = [COMPOSE, DOCKERFILE, *DEPLOY.rglob("*"), *(ROOT / ".github").rglob("*")]
    for path in files:
        if path.is_file():
            text = path.read_text(errors="ignore")
            for pattern in patterns:
                assert not re.search(pattern, text), f"{path.relative_to(ROOT)} contains {pattern}"


# ------------------------------------------------------------------------------ checkov (slow)


def checkov_skips() -> dict[str, str]:
    skips = {}
    for line in (DEPLOY / ".checkov.yaml").read_text().splitlines():
        match = re.match(r"\s*-\s*(CKV2?_[A-Z0-9_]+)\s*(?:#\s*(.*))?$", line)
        if match:
            skips[match.group(1)] = (match.group(2) or "").strip()
    return skips


def test_every_checkov_skip_has_a_reason() -> None:
    skips = checkov_skips()
    assert skips
    assert all(len(reason) > 15 for reason in skips.values()), [k for k, v in skips.items() if len(v) <= 15]


@pytest.mark.slow
def test_checkov_finds_no_failed_check(tmp_path: Path) -> None:
    checkov = tool("checkov")
    rendered = tmp_path / "k8s"
    rendered.mkdir()
    for kustomization in KUSTOMIZATIONS[1:]:
        (rendered / f"{kustomization.replace('/', '-')}.yaml").write_text(
            yaml.safe_dump_all(list(render(kustomization)))
        )
    runs = [
        ["-d", str(rendered), "--framework", "kubernetes"],
        ["-d", str(DEPLOY / "azure"), "--framework", "terraform"],
        ["-f", str(DOCKERFILE), "--framework", "dockerfile"],
    ]
    for args in runs:
        out = subprocess.run(
            [checkov, "--config-file", str(DEPLOY / ".checkov.yaml"), *args, "-o", "json"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        reports = json.loads(out.stdout)
        for report in reports if isinstance(reports, list) else [reports]:
            failed = [
                f"{c['check_id']} {c['check_name']} ({c['resource']})"
                for c in report["results"]["failed_checks"]
            ]
            assert not failed, f"checkov {args[-1]}: {failed}"
            assert report["summary"]["passed"] > 0


@pytest.mark.parametrize("kustomization", OVERLAYS)
def test_workers_are_static_members_named_after_their_pod(kustomization: str) -> None:
    """A worker container restarted in its pod (crash, OOM kill) rejoins as the same static member
    (IRIS_KAFKA_GROUP_INSTANCE_ID = the pod name, from the downward API) and gets its partitions
    back without a rebalance of the others."""
    docs = render(kustomization)
    container = named(docs, "Deployment", "iris-worker")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container.get("env", [])}
    assert env_name("kafka_group_instance_id") == "IRIS_KAFKA_GROUP_INSTANCE_ID"
    ref = env["IRIS_KAFKA_GROUP_INSTANCE_ID"]["valueFrom"]["fieldRef"]
    assert ref["fieldPath"] == "metadata.name"


def test_the_compose_worker_is_a_static_member_too() -> None:
    worker = iris_services()["worker"]
    assert worker["environment"]["IRIS_KAFKA_GROUP_INSTANCE_ID"]


def test_the_spark_application_runs_a_real_spark_backfill() -> None:
    app = named(render("jobs/spark"), "SparkApplication", "iris-backfill-spark")
    spec = app["spec"]
    assert spec["mainApplicationFile"].endswith("/iris_scorer/spark_submit.py")
    assert (ROOT / "iris_scorer" / "spark_submit.py").is_file()
    args = spec["arguments"]
    assert option_value(args, "--engine") == "spark" and (option_value(args, "--output") or "").endswith(
        ".parquet"
    )
    assert_real_invocation(args, "jobs/spark")
    import pyspark

    assert spec["sparkVersion"] == pyspark.__version__  # the image's PySpark is the lock's


def test_the_spark_image_installs_the_locks_pyspark() -> None:
    stage = dockerfile().split("AS spark", 1)[1]
    lock = dict(
        line.split("==", 1) for line in (ROOT / "requirements.lock").read_text().splitlines() if "==" in line
    )
    for name in ("pyspark", "py4j"):
        assert f"{name}=={lock[name]}" in stage, f"the spark image's {name} is not the lock's {lock[name]}"
    assert "openjdk-17-jre" in stage
