"""The deployment files agree with the code: compose topology, isolation, and every setting documented."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SERVICES = {"postgres", "app", "job-manager", "melody-service", "vocal-mix-service"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_has_one_container_per_process_and_postgres_with_a_health_check(compose) -> None:
    services = compose["services"]
    assert set(services) == SERVICES
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert any("postgres_data" in v for v in services["postgres"]["volumes"])
    for name in SERVICES - {"postgres"}:
        assert any(str(v).startswith("shared_data:") for v in services[name]["volumes"]), name
    assert services["job-manager"]["command"][-1] == "app.job_manager"
    assert "postgresql" in services["app"]["environment"]["DATABASE_URL"]


def test_only_the_app_is_reachable_from_outside(compose) -> None:
    services = compose["services"]
    assert [name for name, svc in services.items() if svc.get("ports")] == ["app"]
    assert compose["networks"]["backend"]["internal"] is True
    for name in SERVICES - {"app"}:
        assert services[name]["networks"] == ["backend"], name


def test_each_image_has_a_dockerfile_that_copies_what_it_imports(compose) -> None:
    for name in SERVICES - {"postgres"}:
        dockerfile = REPO / compose["services"][name]["build"]["dockerfile"]
        text = dockerfile.read_text()
        assert "COPY tmik_common/" in text, dockerfile
        package = dockerfile.parent.name
        assert f"COPY {package}/" in text


@pytest.mark.skipif(shutil.which("docker") is None, reason="the docker CLI is not installed")
def test_docker_compose_config_validates() -> None:
    result = subprocess.run(["docker", "compose", "config", "-q"], check=False, cwd=REPO, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr


def _variables_read_by_the_code() -> set[str]:
    pattern = re.compile(r"""(?:env_float|env_int|os\.environ\.get|os\.getenv)\(\s*["']([A-Z][A-Z0-9_]+)["']""")
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
