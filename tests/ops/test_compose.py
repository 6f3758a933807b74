"""The docker compose stack and its image, checked without Docker (no engine runs here): every service
has its container, every variable the stack sets is one openbell reads, no secret is written in the file
(and none has a default: the stack refuses to start without them), NATS runs from a config nats-server
accepts with the same users and permissions as the embedded server, ports are on 127.0.0.1, and the image
holds every package openbell installs."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import yaml
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from services.broker import BrokerSettings
from services.broker.alpaca import AlpacaSettings
from services.core import nats_auth
from services.core.embedded import nats_server_binary
from services.core.settings import Settings
from services.positions.settings import PositionsSettings
from services.stack import SERVICES

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def variables_read(settings: type[BaseSettings]) -> set[str]:
    """The environment variables a settings class reads."""
    prefix = str(settings.model_config.get("env_prefix", ""))
    names = set()
    for name, field in settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {choice for choice in alias.choices if isinstance(choice, str) and choice.isupper()}
        else:
            names.add(f"{prefix}{name}".upper())
    return names


def test_every_service_has_a_container_that_serves_it() -> None:
    services = compose()["services"]
    served = {
        name: spec["command"] for name, spec in services.items() if name not in ("nats", "postgres", "setup")
    }
    assert {name: ["serve", name] for name in SERVICES.names} == served
    assert services["setup"]["command"] == ["setup"] and services["setup"]["restart"] == "no"
    for name in served:
        depends = services[name]["depends_on"]
        assert depends == {"nats": {"condition": "service_healthy"}, "postgres": {"condition": "service_healthy"},
                           "setup": {"condition": "service_completed_successfully"}}
        assert services[name]["restart"] == "unless-stopped"


def test_every_variable_of_the_stack_is_read_by_openbell_and_no_secret_is_written_in_it() -> None:
    known = set().union(*(variables_read(s) for s in (Settings, BrokerSettings, AlpacaSettings, PositionsSettings)))
    environment: dict[str, str] = compose()["services"]["orders"]["environment"]
    assert set(environment) <= known, set(environment) - known
    for secret in ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY"):
        assert environment[secret] == "${" + secret + ":-}", environment[secret]  # from the environment only
    assert "${OPENBELL_DB_SERVICE_PASSWORD:?" in environment["OPENBELL_DATABASE_URL"]
    assert environment["OPENBELL_DATABASE_URL"].startswith("postgresql://openbell_service:")
    # Each value parses as openbell would read it (the compose network's host names stand for the servers;
    # a required secret stands for itself).
    plain = {k.removeprefix("OPENBELL_").lower(): re.sub(r"\$\{[A-Z_]+:\?[^}]*\}", "secret",
                                                          re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", v))
             for k, v in environment.items() if k.startswith("OPENBELL_")}
    settings = Settings.model_validate({k: v for k, v in plain.items() if k in Settings.model_fields})
    assert settings.nats_url == "nats://nats:4222" and settings.metrics_port == 9464
    assert settings.broker == "sim" and settings.trading_mode == "paper" and settings.live_trading == "no"


def test_the_servers_are_the_versions_openbell_needs_and_nats_has_jetstream_and_websockets() -> None:
    services = compose()["services"]
    nats_image = services["nats"]["image"]
    version = re.match(r"nats:(\d+)\.(\d+)", nats_image)
    assert version is not None, nats_image
    assert (int(version[1]), int(version[2])) >= (2, 10)
    assert services["nats"]["command"] == ["-c", "/etc/nats/nats-server.conf"]
    config = nats_config()
    assert "jetstream {" in config and re.search(r"websocket \{[^}]*allowed_origins: \[", config)
    assert "healthcheck" in services["nats"] and "healthcheck" in services["postgres"]


def nats_config() -> str:
    return str(compose()["configs"]["nats-server.conf"]["content"])


def as_compose_would(text: str, variables: dict[str, str]) -> str:
    """Compose's interpolation: ${VAR:?msg} and ${VAR:-default} from ``variables``, $$ is a literal $."""
    def value(match: re.Match[str]) -> str:
        name, kind, rest = match[1], match[2], match[3]
        if name in variables:
            return variables[name]
        assert kind == ":-", f"{name} is required and not set"
        return rest

    return re.sub(r"(?<!\$)\$\{([A-Z_]+)(:[-?])([^}]*)\}", value, text).replace("$$", "$")


def test_no_secret_has_a_default_and_ports_are_on_loopback() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    secrets = re.findall(r"\$\{([A-Z_]*PASSWORD[A-Z_]*)(:.)?", text)
    assert secrets and all(kind == ":?" for _, kind in secrets), secrets
    services = compose()["services"]
    for name, spec in services.items():
        for port in spec.get("ports", []):
            assert port.startswith("${OPENBELL_BIND_ADDRESS:-127.0.0.1}:"), (name, port)
    # Only NATS and the dashboard are published (on loopback unless OPENBELL_BIND_ADDRESS says otherwise).
    assert set(services) - {"nats", "web"} == {name for name, spec in services.items() if "ports" not in spec}


def test_nats_runs_from_a_config_it_accepts_with_the_users_and_permissions_of_the_embedded_server(
    tmp_path: Path,
) -> None:
    passwords = {nats_auth.compose_password_variable(role): f"pw-{role}" for role in nats_auth.ROLES}
    config = as_compose_would(nats_config(), passwords)
    expected = nats_auth.render_authorization("openbell", {role: f"pw-{role}" for role in nats_auth.ROLES})
    assert expected in config
    path = tmp_path / "nats-server.conf"
    path.write_text(config.replace("/data", str(tmp_path / "js")))
    checked = subprocess.run([str(nats_server_binary()), "-c", str(path), "-t"], capture_output=True, text=True,
                             timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # Each service container is the NATS user of its role, the setup container the admin.
    services = compose()["services"]
    roles = {name: spec["environment"]["OPENBELL_NATS_USER"] for name, spec in services.items()
             if name not in ("nats", "postgres")}
    # ... the role each service's definition names for a process of its own.
    assert roles == {"setup": "admin", **{service.name: service.nats_role for service in SERVICES.services}}
    for name, role in roles.items():
        variable = nats_auth.compose_password_variable(role)
        assert services[name]["environment"]["OPENBELL_NATS_PASSWORD"].startswith("${" + variable + ":?")


def test_the_database_roles_are_made_with_passwords_from_the_environment_and_the_owner_migrates() -> None:
    config = compose()["configs"]["postgres-roles.sh"]["content"]
    assert "CREATE ROLE openbell_service LOGIN NOSUPERUSER" in config
    assert "CREATE DATABASE openbell OWNER openbell_owner" in config
    services = compose()["services"]
    assert "POSTGRES_USER" not in services["postgres"]["environment"]
    setup = services["setup"]["environment"]
    assert setup["OPENBELL_DATABASE_OWNER_URL"].startswith("postgresql://openbell_owner:${OPENBELL_DB_OWNER_PASSWORD:?")
    assert all("OPENBELL_DATABASE_OWNER_URL" not in spec.get("environment", {})
               for name, spec in services.items() if name != "setup")


def test_the_image_holds_every_package_openbell_installs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = [p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]]
    dockerfile = (ROOT / "Dockerfile").read_text()
    for package in packages:
        assert re.search(rf"^COPY {package} \./{package}$", dockerfile, re.MULTILINE), package
    assert re.search(r"^USER (?!root)\w+", dockerfile, re.MULTILINE), "the services do not run as root"
    assert 'ENTRYPOINT ["openbell"]' in dockerfile
