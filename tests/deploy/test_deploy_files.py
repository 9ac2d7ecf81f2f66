"""The deployment files (deploy/, docker-compose.yml, bin/*-up.sh), linted and checked against the code.

What can't run here (Docker builds, clusters) is checked by construction instead: the image's
packages are synced from uv.lock and loaded, sandboxd's command line is parsed by sandboxd, the
harness pins are the plugins' own, and every environment validates against LAP's settings. A
missing linter fails its test, naming the install step (files.INSTALL).
"""

from __future__ import annotations

import os
import re
import shlex
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from lap_core import HOME_DIR, LLM_BASE_URL, WORKSPACE_DIR, Lap
from lap_kubernetes import manifests
from lap_local import bwrap
from lap_sandboxd.daemon import parse_args
from lap_server.auth import OPEN_PATHS
from tests.deploy.files import (
    ROOT,
    args,
    build_context,
    check_settings,
    dockerfile,
    env,
    interpolate,
    last,
    lock_packages,
    run,
    tool,
)

DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "lap"
PLATFORM_PACKAGES = {
    "lap-core",
    "lap-sql",
    "lap-server",
    "lap-kubernetes",
    "lap-opencode",
    "lap-claude-code",
    "lap-codex",
}
SECRETS = {
    "DATABASE_URL": "postgresql://lap:secret@db:5432/lap",
    "MASTER_KEY": "change-me-please",
    "LITELLM_API_BASE": "http://litellm:4000",
    "LITELLM_API_KEY": "sk-test",
}


def harness_pins() -> dict[str, tuple[str, ...]]:
    return {name: spec.factory.npm_packages for name, spec in Lap().plugins.harnesses().items()}


# --- shell scripts ----------------------------------------------------------------------------------


def test_shellcheck_passes_on_the_cluster_scripts() -> None:
    shellcheck = tool("shellcheck")
    scripts = [ROOT / "bin/kind-up.sh", ROOT / "bin/eks-up.sh"]
    result = run([shellcheck, *map(str, scripts)])
    assert result.returncode == 0, result.stdout + result.stderr
    for script in scripts:
        assert os.access(script, os.X_OK), f"{script} is not executable"
        assert "set -euo pipefail" in script.read_text()
    # The test cluster's scripts have style findings; errors would be bugs.
    test_cluster = sorted((ROOT / "tests/k8s/cluster").glob("*.sh"))
    result = run([shellcheck, "--severity=error", *map(str, test_cluster)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_cluster_scripts_build_every_harness_image() -> None:
    for script in ("kind-up.sh", "eks-up.sh"):
        text = (ROOT / "bin" / script).read_text()
        default = re.search(r"HARNESSES=\$\{LAP_HARNESSES:-([^}]*)\}", text)
        assert default, f"{script} has no default LAP_HARNESSES"
        assert set(default[1].split()) == set(harness_pins()), script
        assert "deploy/sandbox.Dockerfile" in text
        assert "deploy/Dockerfile" in text
        assert "lap-sandbox-{harness}:" in text, f"{script} does not set the sandbox image template"


# --- Dockerfiles ------------------------------------------------------------------------------------


def test_hadolint_passes_on_the_dockerfiles() -> None:
    result = run([tool("hadolint"), str(DEPLOY / "Dockerfile"), str(DEPLOY / "sandbox.Dockerfile")])
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_platform_image() -> None:
    instructions = dockerfile(DEPLOY / "Dockerfile")
    assert args(instructions)["PYTHON_IMAGE"] == "python:3.11-slim-bookworm"
    assert [i.value for i in instructions if i.keyword == "FROM"] == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]
    final = instructions[-1].stage
    user = last(instructions, "USER", final).value
    assert user.split(":")[0] not in ("0", "root"), "the platform runs as root"
    assert last(instructions, "ENTRYPOINT").json() == ["lap"]
    assert last(instructions, "CMD").json() == ["serve"]
    variables = env(i for i in instructions if i.stage == final)
    assert variables["LAP_HOST"] == "0.0.0.0"
    assert last(instructions, "EXPOSE", final).value == variables["LAP_PORT"] == "3000"
    assert re.fullmatch(r"\d+\.\d+\.\d+", args(instructions)["UV_VERSION"])
    sync = shlex.split(next(i.value for i in instructions if "uv sync" in i.value))
    assert {"--frozen", "--no-dev", "--no-editable"} <= set(sync)
    packages = {sync[n + 1] for n, word in enumerate(sync) if word == "--package"}
    assert packages == PLATFORM_PACKAGES
    lock = lock_packages()
    for package in packages:
        assert "editable" in lock[package]["source"], f"{package} is not a workspace member in uv.lock"
    assert not any("npm" in i.value or "nodejs" in i.value for i in instructions), "no harness CLI here"


def test_the_platform_image_installs_and_loads_its_plugins(tmp_path: Any) -> None:
    """The build stage's `uv sync`, run on the build context the .dockerignore lets through."""
    instructions = dockerfile(DEPLOY / "Dockerfile")
    context = build_context(tmp_path / "context", DEPLOY / "Dockerfile.dockerignore")
    sync = shlex.split(next(i.value for i in instructions if "uv sync" in i.value))
    venv = tmp_path / "venv"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LAP_", "UV_", "VIRTUAL_ENV"))}
    build_env = {**clean, "UV_PROJECT_ENVIRONMENT": str(venv), "UV_PYTHON_DOWNLOADS": "never", "UV_PYTHON": "3.11"}
    result = run([tool("uv"), *sync[1:]], cwd=context, env=build_env)
    assert result.returncode == 0, result.stderr
    lap = str(venv / "bin" / "lap")
    image_env = {
        **clean,
        **env(i for i in instructions if i.stage == instructions[-1].stage),
        "PATH": os.environ["PATH"],
    }
    plugins = run([lap, "plugins"], cwd=tmp_path, env=image_env)
    assert plugins.returncode == 0, plugins.stderr
    listed = dict(line.split(": ", 1) for line in plugins.stdout.splitlines() if ": " in line)
    installed = {line.split()[0] for line in plugins.stdout.splitlines() if line.startswith("lap-")}
    assert installed == PLATFORM_PACKAGES - {"lap-core"}
    assert image_env["LAP_SANDBOX_BACKEND"] in listed["backends"].split(", ")
    assert set(listed["harnesses"].split(", ")) == set(harness_pins())
    commands = run([lap, "--help"], cwd=tmp_path, env=image_env).stdout
    assert {"serve", "worker", "migrate"} <= set(re.findall(r"^  (\w+)", commands, re.MULTILINE))
    assert "--no-worker" in run([lap, "serve", "--help"], cwd=tmp_path, env=image_env).stdout


def test_the_sandbox_image() -> None:
    instructions = dockerfile(DEPLOY / "sandbox.Dockerfile")
    defaults = args(instructions)
    for name, packages in harness_pins().items():
        assert (defaults[f"{name.upper().replace('-', '_')}_PACKAGE"],) == packages, f"{name}'s pin drifted"
    install = next(i.value for i in instructions if "npm install" in i.value)
    assert set(re.findall(r"([\w-]+)\) package=", install)) == set(harness_pins())
    msgspec_lock = lock_packages()["msgspec"]["version"]
    assert defaults["MSGSPEC_VERSION"] == msgspec_lock, "sandboxd's msgspec differs from uv.lock's"
    final = instructions[-1].stage
    assert last(instructions, "USER", final).value == f"{manifests.UID}:{manifests.UID}"
    assert manifests.UID == bwrap.UID_INSIDE
    assert last(instructions, "WORKDIR", final).value == WORKSPACE_DIR
    variables = env(i for i in instructions if i.stage == final)
    assert variables["HOME"] == HOME_DIR
    assert variables["PATH"] == bwrap.sandbox_env()["PATH"]
    copies = [i.value for i in instructions if i.keyword == "COPY"]
    assert f"lap_sandboxd {manifests.PYTHON_DIR}/lap_sandboxd" in copies
    assert f"--target {manifests.PYTHON_DIR}" in " ".join(i.value for i in instructions)
    assert last(instructions, "EXPOSE", final).value == str(manifests.SANDBOXD_PORT)
    assert not any("npm" in i.value.split() for i in instructions if i.stage == final)
    shell, flag, script = last(instructions, "CMD", final).json()
    assert (shell, flag) == ("/bin/sh", "-c")
    argv = shlex.split(re.sub(r"\$\{LAP_VAULT_ADDRESS(:\?[^}]*)?\}", "vault.lap.svc:4001", script))
    assert argv[:6] == ["exec", "python3", "-I", "-B", "-m", "lap_sandboxd"]
    parsed = parse_args(argv[6:])
    assert parsed.socket == f"{manifests.RUN_DIR}/sandboxd.sock"
    assert str(parsed.state) == f"{manifests.RUN_DIR}/state"
    assert parsed.listen == ("0.0.0.0", manifests.SANDBOXD_PORT)
    assert parsed.egress == [
        (("127.0.0.1", manifests.LLM_PORT), ("vault.lap.svc", 4001)),
        (("127.0.0.1", manifests.EGRESS_PORT), ("vault.lap.svc", 4001)),
    ]
    assert urlsplit(LLM_BASE_URL).port == manifests.LLM_PORT == bwrap.LLM_PORT


# --- Docker Compose ---------------------------------------------------------------------------------


def test_docker_compose() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "migrate", "web", "worker"} <= set(services)
    assert services["postgres"]["image"].startswith("postgres:16")
    assert "healthcheck" in services["postgres"]
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["migrate"]["command"] == ["migrate"]
    assert services["web"]["command"] == ["serve", "--no-worker"]
    assert services["worker"]["command"] == ["worker"]
    for name in ("web", "worker"):
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert "3000:3000" in services["web"]["ports"]
    assert len({services[name]["image"] for name in ("migrate", "web", "worker")}) == 1
    for name in ("MASTER_KEY", "LITELLM_API_BASE", "LITELLM_API_KEY"):
        with pytest.raises(ValueError, match=name):
            interpolate(services["web"]["environment"][name], {})
    given = {**SECRETS, "HOME": "/home/someone"}
    for name in ("migrate", "web", "worker"):
        variables = {key: interpolate(str(value), given) for key, value in services[name]["environment"].items()}
        check_settings(variables, server=name == "web", where=f"docker-compose.yml {name}")
        vault = urlsplit(variables["LAP_VAULT_URL"])
        assert str(vault.port) == variables["LAP_VAULT_LISTEN"].rsplit(":", 1)[1]
        assert any(v.endswith(":" + variables["LAP_K8S_KUBECONFIG"] + ":ro") for v in services[name]["volumes"])


# --- Render -----------------------------------------------------------------------------------------


def test_the_render_blueprint() -> None:
    blueprint = yaml.safe_load((DEPLOY / "render/render.yaml").read_text())
    (database,) = blueprint["databases"]
    assert database["postgresMajorVersion"] == "16"
    (web,) = blueprint["services"]
    assert (web["type"], web["runtime"], web["dockerContext"]) == ("web", "docker", ".")
    assert (ROOT / web["dockerfilePath"]).resolve() == DEPLOY / "Dockerfile"
    assert web["preDeployCommand"] == "lap migrate"
    assert web["dockerCommand"] == "lap serve --no-worker"
    assert web["healthCheckPath"] in OPEN_PATHS
    image = env(i for i in dockerfile(DEPLOY / "Dockerfile") if i.stage == 1)
    variables = dict(image)
    for item in web["envVars"]:
        if "fromDatabase" in item:
            assert item["fromDatabase"] == {"name": database["name"], "property": "connectionString"}
            variables[item["key"]] = SECRETS[item["key"]]
        elif item.get("generateValue"):
            variables[item["key"]] = "generated-by-render-0123456789"
        elif item.get("sync") is False:
            variables[item["key"]] = SECRETS.get(item["key"], "registry.example/lap-sandbox-{harness}:1")
        else:
            variables[item["key"]] = item["value"]
    assert variables.pop("PORT") == image["LAP_PORT"]
    check_settings(variables, server=True, where="render.yaml lap-web")


# --- the Helm chart ---------------------------------------------------------------------------------


def helm_template(*settings: str, values: dict[str, str] = SECRETS) -> list[dict[str, Any]]:
    given = [f"--set=secrets.{name}={value}" for name, value in values.items()]
    result = run([tool("helm"), "template", "lap", str(CHART), "--namespace", "lap", *given, *settings])
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def test_helm_lint() -> None:
    given = [f"--set=secrets.{name}={value}" for name, value in SECRETS.items()]
    result = run([tool("helm"), "lint", "--strict", str(CHART), *given])
    assert result.returncode == 0, result.stdout + result.stderr
    missing = run([tool("helm"), "template", "lap", str(CHART)])
    assert missing.returncode != 0
    assert "secrets.DATABASE_URL is required" in missing.stderr


def test_helm_chart_configures_lap_validly() -> None:
    docs = helm_template()
    config = by_kind(docs, "Secret")["lap-config"]
    pods = {**by_kind(docs, "Deployment"), **by_kind(docs, "Job")}
    assert set(pods) == {"lap-web", "lap-worker", "lap-migrate"}
    for name, workload in pods.items():
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        assert container["envFrom"] == [{"secretRef": {"name": "lap-config"}}]
        given = {item["name"]: item["value"] for item in container["env"] if "value" in item}
        assert {item["name"]: item["valueFrom"] for item in container["env"] if "value" not in item} == {
            "POD_IP": {"fieldRef": {"fieldPath": "status.podIP"}}
        }
        # Kubernetes expands $(POD_IP) from the variable before it.
        given = {name: value.replace("$(POD_IP)", "10.1.2.3") for name, value in given.items()}
        variables = {**config["stringData"], **given}
        check_settings(variables, server=name == "lap-web", where=f"chart {name}")
        assert workload["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    web, worker = (pods[name]["spec"]["template"]["spec"]["containers"][0] for name in ("lap-web", "lap-worker"))
    assert web["args"] == ["serve", "--no-worker"]
    assert web["ports"][0]["containerPort"] == 3000
    assert web["readinessProbe"]["httpGet"]["path"] in OPEN_PATHS
    assert worker["args"][0] == "worker"
    assert pods["lap-migrate"]["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]
    variables = {item["name"]: item["value"] for item in worker["env"] if "value" in item}
    vault_port = int(variables["LAP_VAULT_LISTEN"].rsplit(":", 1)[1])
    assert variables["LAP_VAULT_ADVERTISE"] == f"$(POD_IP):{vault_port}"
    assert {"name": "vault", "containerPort": vault_port} in worker["ports"]
    url = urlsplit(variables["LAP_VAULT_URL"])
    service = by_kind(docs, "Service")[url.hostname.split(".")[0]]
    assert url.hostname == f"{service['metadata']['name']}.lap.svc"
    assert url.port == vault_port
    assert service["spec"]["selector"] == pods["lap-worker"]["spec"]["selector"]["matchLabels"]
    assert "{harness}" in variables["LAP_K8S_IMAGE"]


def test_helm_migration_runs_first_with_its_secret() -> None:
    docs = helm_template()
    job = by_kind(docs, "Job")["lap-migrate"]["metadata"]["annotations"]
    secret = by_kind(docs, "Secret")["lap-config"]["metadata"]["annotations"]
    assert job["helm.sh/hook"] == secret["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert int(secret["helm.sh/hook-weight"]) < int(job["helm.sh/hook-weight"])
    mine = helm_template("--set=existingSecret=mine", values={})
    assert "lap-config" not in by_kind(mine, "Secret")
    web = by_kind(mine, "Deployment")["lap-web"]["spec"]["template"]["spec"]["containers"][0]
    assert web["envFrom"] == [{"secretRef": {"name": "mine"}}]


def test_helm_rbac_is_the_least_the_backend_needs() -> None:
    (role,) = by_kind(helm_template(), "Role").values()
    rules = {resource: set(rule["verbs"]) for rule in role["rules"] for resource in rule["resources"]}
    assert not any("*" in verbs for verbs in rules.values())
    assert rules["sandboxes"] == rules["sandboxclaims"] == {"create", "get", "list", "watch", "patch", "delete"}
    assert rules["sandboxwarmpools"] == {"get", "list", "watch"}
    assert "sandboxtemplates" not in rules
    assert rules["persistentvolumeclaims"] == rules["secrets"] == {"create", "get", "list", "patch", "delete"}
    assert rules["pods"] == {"get", "list", "watch"}
    assert "pods/portforward" not in rules
    assert "pods/exec" not in rules
    warm = helm_template("--set=sandbox.warmPoolSize=2", "--set=rbac.clusterWide=true")
    (cluster_role,) = by_kind(warm, "ClusterRole").values()
    warm_rules = {r: set(rule["verbs"]) for rule in cluster_role["rules"] for r in rule["resources"]}
    assert {"create", "update"} <= warm_rules["sandboxwarmpools"]
    assert {"create"} <= warm_rules["sandboxtemplates"]
    assert by_kind(warm, "ClusterRoleBinding")


def test_helm_network_policy_confines_sandboxes() -> None:
    for settings in ((), ("--set=sandbox.namespace=sandboxes",)):
        docs = helm_template(*settings)
        (policy,) = by_kind(docs, "NetworkPolicy").values()
        spec = policy["spec"]
        assert spec["podSelector"]["matchLabels"] == manifests.MANAGED_BY
        assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
        (ingress,) = spec["ingress"]
        assert ingress["ports"] == [{"protocol": "TCP", "port": manifests.SANDBOXD_PORT}]
        worker_labels = by_kind(docs, "Deployment")["lap-worker"]["spec"]["selector"]["matchLabels"]
        assert [peer["podSelector"]["matchLabels"] for peer in ingress["from"]] == [worker_labels]
        vault, dns = spec["egress"]
        assert [peer["podSelector"]["matchLabels"] for peer in vault["to"]] == [worker_labels]
        assert vault["ports"] == [{"protocol": "TCP", "port": 4001}]
        assert {port["port"] for port in dns["ports"]} == {53}
        if settings:
            assert policy["metadata"]["namespace"] == "sandboxes"
            assert ingress["from"][0]["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "lap"}}
            (role,) = by_kind(docs, "Role").values()
            assert role["metadata"]["namespace"] == "sandboxes"
