"""The deployment files agree with the code: compose topology, isolation, images, and every setting documented.

These read the files only (plus `docker compose config` where the compose plugin exists); `make docker-test`
(docker/docker_test.py) builds and runs the deployment itself.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SERVICES = {"postgres", "app", "job-manager", "melody-service", "vocal-mix-service"}
# The images, each built by exactly one compose service; job-manager runs the app's image.
BUILT_BY = {"app": "app/Dockerfile",
            "melody-service": "tmik_bgm_conditional_melody_generation/Dockerfile",
            "vocal-mix-service": "tmik_make_vocal_mix/Dockerfile"}
# Images whose code uses numba (librosa, the analysis, the take's pitch check): their caches are warmed
# at build time. The app imports no librosa (checked below), so it has none to warm.
NUMBA_IMAGES = {"melody-service", "vocal-mix-service"}
COMPILERS = re.compile(r"\b(gcc|g\+\+|clang|build-essential|cc)\b")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def _dockerfile(service: str) -> str:
    return (REPO / BUILT_BY[service]).read_text()


def _stages(text: str) -> list[str]:
    """A Dockerfile's build stages, each from its FROM line to the next (comments dropped)."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    stages: list[list[str]] = []
    for line in lines:
        if re.match(r"\s*FROM\s", line, re.IGNORECASE):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return ["\n".join(stage) for stage in stages]


def _final_stage(service: str) -> str:
    return _stages(_dockerfile(service))[-1]


def test_compose_has_one_container_per_process_and_postgres_with_a_health_check(compose) -> None:
    services = compose["services"]
    assert set(services) == SERVICES
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert any("postgres_data" in v for v in services["postgres"]["volumes"])
    for name in SERVICES - {"postgres"}:
        assert any(str(v).startswith("shared_data:") for v in services[name]["volumes"]), name
    assert services["job-manager"]["command"][-1] == "app.job_manager"
    assert "postgresql" in services["app"]["environment"]["DATABASE_URL"]
    assert "postgresql" in services["job-manager"]["environment"]["DATABASE_URL"]


def test_only_the_app_is_reachable_from_outside(compose) -> None:
    services = compose["services"]
    assert [name for name, svc in services.items() if svc.get("ports")] == ["app"]
    assert compose["networks"]["backend"]["internal"] is True
    for name in SERVICES - {"app"}:
        assert services[name]["networks"] == ["backend"], name


def test_the_app_is_published_on_loopback_unless_an_address_is_configured(compose) -> None:
    # With API_KEYS unset (the default) anyone who reaches the port may use the app: by default only
    # this machine can. APP_BIND_ADDRESS=0.0.0.0 opens it (README: only together with API_KEYS).
    (port,) = compose["services"]["app"]["ports"]
    assert port == "${APP_BIND_ADDRESS:-127.0.0.1}:${APP_PORT:-8080}:8080"


def test_each_image_is_built_by_one_service_and_the_job_manager_reuses_the_apps(compose) -> None:
    services = compose["services"]
    built = {name: svc["build"]["dockerfile"] for name, svc in services.items() if "build" in svc}
    assert built == BUILT_BY
    images = [services[name]["image"] for name in built]
    assert len(set(images)) == len(images)
    # Built once: a second service building the same tag builds it twice and leaves a dangling image.
    assert services["job-manager"]["image"] == services["app"]["image"]
    assert "build" not in services["job-manager"]
    assert services["job-manager"].get("pull_policy") == "never"  # never looked for on a registry


def test_each_image_has_a_dockerfile_that_copies_what_it_imports() -> None:
    for service, dockerfile in BUILT_BY.items():
        text = _final_stage(service)
        assert "COPY tmik_common/" in text, dockerfile
        package = Path(dockerfile).parent.name
        assert f"COPY {package}/" in text, dockerfile


def test_every_dockerfile_takes_its_base_image_as_a_build_argument(compose) -> None:
    # So the same files build from the official image or from a local stand-in (docker/base-images.sh).
    for service, dockerfile in BUILT_BY.items():
        text = _dockerfile(service)
        first_from = re.search(r"^FROM\s", text, re.MULTILINE)
        assert first_from is not None
        assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim-bookworm$", text[:first_from.start()], re.MULTILINE), \
            dockerfile
        assert _final_stage(service).startswith("FROM ${BASE_IMAGE}"), dockerfile
        args = compose["services"][service]["build"]["args"]
        assert args["BASE_IMAGE"] == "${PYTHON_BASE_IMAGE:-python:3.11-slim-bookworm}", service
    assert compose["services"]["postgres"]["image"] == "${POSTGRES_IMAGE:-postgres:16}"


def test_the_vocal_image_compiles_pyworld_in_a_builder_stage_and_ships_no_compiler() -> None:
    # pyworld 0.3.5 has no Linux wheel: pip compiles it, which needs a C++ compiler the slim base lacks.
    stages = _stages(_dockerfile("vocal-mix-service"))
    assert len(stages) >= 2
    builder, final = stages[0], stages[-1]
    assert re.match(r"FROM \$\{BASE_IMAGE\} AS builder", builder)
    assert "g++" in builder and re.search(r"pip wheel .*pyworld", builder)
    assert "--mount=type=bind,from=builder" in final and "--find-links /wheels" in final
    for stage in (_final_stage(name) for name in BUILT_BY):
        assert not COMPILERS.search(" ".join(re.findall(r"apt-get install[^\n]*(?:\\\n[^\n]*)*", stage)))


def test_the_melody_image_can_take_torch_from_a_local_wheel_folder_or_the_pytorch_index() -> None:
    text = _dockerfile("melody-service")
    assert re.search(r"^FROM scratch AS wheels$", text, re.MULTILINE)  # empty unless --build-context wheels=DIR
    final = _final_stage("melody-service")
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in final  # a normal user's default
    assert "--mount=type=bind,from=wheels,target=/wheels" in final
    assert '${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"}' in final


def test_every_image_installs_the_project_so_it_reports_its_version() -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert version != "0.0.0"
    for service in BUILT_BY:
        final = _final_stage(service)
        assert "COPY pyproject.toml" in final, service
        assert "pip install --no-deps -e ." in final, service
    for name in (".dockerignore",):
        ignored = (REPO / name).read_text().split()
        assert "pyproject.toml" not in ignored


def test_images_run_as_a_non_root_user_and_have_a_healthcheck() -> None:
    for service in BUILT_BY:
        final = _final_stage(service)
        users = re.findall(r"^USER\s+(\S+)", final, re.MULTILINE)
        assert users and users[-1] not in ("root", "0"), service
        assert "HEALTHCHECK" in final, service


def test_the_processes_never_run_as_pid_1() -> None:
    # As PID 1 a process gets no default signal handling and must reap every orphan, and its task
    # processes, whose parent is then PID 1, took that for "the parent died" and exited during warm-up.
    for service in BUILT_BY:
        final = _final_stage(service)
        assert re.search(r"apt-get install[^\n]*\btini\b", final), service
        assert 'ENTRYPOINT ["/usr/bin/tini", "--"]' in final, service


def test_numba_caches_are_warmed_at_build_time_as_the_runtime_user() -> None:
    app_sources = " ".join(p.read_text(encoding="utf-8") for p in (REPO / "app").rglob("*.py"))
    assert not re.search(r"^\s*(import|from) librosa", app_sources, re.MULTILINE), \
        "the app imports librosa now: warm its numba caches in app/Dockerfile too"
    for service in NUMBA_IMAGES:
        final = _final_stage(service)
        cache = re.search(r"NUMBA_CACHE_DIR=(\S+)", final)
        assert cache and cache.group(1).startswith("/home/tmik/"), service  # owned by the runtime user
        warm = final.index("python -m tmik_common.warmup")
        user = final.rindex("USER tmik", 0, warm)  # the warm-up runs as tmik, so the cache is tmik's
        assert user < warm
    assert "warmup" not in _final_stage("app")


def test_every_process_gets_the_service_token_and_the_same_wiring(compose) -> None:
    for name in ("app", "job-manager", "melody-service", "vocal-mix-service"):
        env = compose["services"][name]["environment"]
        assert env["SERVICE_TOKEN"] == "${SERVICE_TOKEN:-}", name
        assert env["SHARED_DATA_DIR"] == "/data", name


def test_every_container_has_a_memory_limit(compose) -> None:
    for name, svc in compose["services"].items():
        assert re.fullmatch(r"\$\{[A-Z_]+_MEM_LIMIT:-\d+[mg]\}", str(svc.get("mem_limit", ""))), name


def _compose_variables(text: str) -> set[str]:
    return set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text))


def test_every_variable_compose_reads_is_documented_in_env_example() -> None:
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (REPO / ".env.example").read_text(), re.MULTILINE))
    used = _compose_variables((REPO / "docker-compose.yml").read_text())
    assert {"APP_BIND_ADDRESS", "PYTHON_BASE_IMAGE", "POSTGRES_IMAGE", "SERVICE_TOKEN"} <= used
    assert used - documented == set()


def test_the_docker_test_is_a_make_target_outside_ci() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^docker-test:.*## ", makefile, re.MULTILINE)
    assert "docker/docker_test.py" in makefile
    ci = (REPO / ".ci" / "run").read_text()
    assert "docker-test" not in ci and "docker_test" not in ci  # too slow for CI; run by hand


def _compose_plugin() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        result = subprocess.run(["docker", "compose", "version"], check=False, capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


needs_compose = pytest.mark.skipif(not _compose_plugin(), reason="no docker compose plugin here")


def _compose_config(tmp_path: Path, *files: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``docker compose config`` with the defaults: no .env and none of compose's variables from our environment."""
    no_env = tmp_path / "empty.env"
    no_env.write_text("")
    args = (["docker", "compose", "--env-file", str(no_env)] + [a for f in files for a in ("-f", f)]
            + ["config", "--format", "json"])
    clean = {k: v for k, v in os.environ.items()
             if k not in _compose_variables((REPO / "docker-compose.yml").read_text())}
    return subprocess.run(args, check=False, cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**clean, "COMPOSE_PROJECT_NAME": "tmik-config-test", **(env or {})})


@needs_compose
def test_docker_compose_config_validates(tmp_path) -> None:
    result = _compose_config(tmp_path, "docker-compose.yml")
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    (port,) = config["services"]["app"]["ports"]
    assert (port["host_ip"], port["published"], port["target"]) == ("127.0.0.1", "8080", 8080)
    assert config["services"]["postgres"]["image"] == "postgres:16"
    assert config["services"]["app"]["build"]["args"]["BASE_IMAGE"] == "python:3.11-slim-bookworm"


@needs_compose
def test_the_docker_test_overrides_merge_into_the_compose_file(tmp_path) -> None:
    result = _compose_config(tmp_path, "docker-compose.yml", "docker/compose.build-host-network.yml",
                             "docker/compose.offline-wheels.yml", env={"TMIK_WHEELS_DIR": str(tmp_path), "APP_BIND_ADDRESS": "0.0.0.0"})
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    for name in BUILT_BY:
        assert services[name]["build"]["network"] == "host", name
    melody = services["melody-service"]["build"]
    assert melody["additional_contexts"]["wheels"] == str(tmp_path)
    assert melody["args"]["TORCH_INDEX_URL"] == ""
    assert "TORCH_INDEX_URL" not in services["vocal-mix-service"]["build"]["args"]
    assert services["app"]["ports"][0]["host_ip"] == "0.0.0.0"


def _variables_read_by_the_code() -> set[str]:
    pattern = re.compile(r"""(?:env_str|env_float|env_int|os\.environ\.get|os\.getenv)\(\s*["']([A-Z][A-Z0-9_]+)["']""")
    names: set[str] = set()
    for folder in ("app", "tmik_common", "tmik_bgm_conditional_melody_generation", "tmik_make_vocal_mix"):
        for path in (REPO / folder).rglob("*.py"):
            names |= set(pattern.findall(path.read_text(encoding="utf-8")))
    return names


def test_every_setting_the_code_reads_is_documented_in_env_example() -> None:
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (REPO / ".env.example").read_text(), re.MULTILINE))
    read = _variables_read_by_the_code()
    assert {"DATABASE_URL", "API_KEYS", "JOB_LEASE_SECONDS"} <= read  # the scan itself works
    assert read - documented == set()
