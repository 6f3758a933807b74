"""The docker compose stack and its image, checked without Docker (no engine runs here): every service
has its container, every variable the stack sets is one openbell reads, no secret is written in the file,
and the image holds every package openbell installs."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import yaml
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from services.broker import BrokerSettings
from services.broker.alpaca import AlpacaSettings
from services.core.host import SERVICES
from services.core.settings import Settings
from services.positions.settings import PositionsSettings

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
        name: spec["command"] for name, spec in services.items() if name not in ("nats", "postgres")
    }
    assert {name: ["serve", name] for name in SERVICES} == served
    for name in served:
        depends = services[name]["depends_on"]
        assert depends == {"nats": {"condition": "service_healthy"}, "postgres": {"condition": "service_healthy"}}
        assert services[name]["restart"] == "unless-stopped"


def test_every_variable_of_the_stack_is_read_by_openbell_and_no_secret_is_written_in_it() -> None:
    known = set().union(*(variables_read(s) for s in (Settings, BrokerSettings, AlpacaSettings, PositionsSettings)))
    environment: dict[str, str] = compose()["services"]["orders"]["environment"]
    assert set(environment) <= known, set(environment) - known
    for secret in ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY"):
        assert environment[secret] == "${" + secret + ":-}", environment[secret]  # from the environment only
    assert "${POSTGRES_PASSWORD" in environment["OPENBELL_DATABASE_URL"]
    # Each value parses as openbell would read it (the compose network's host names stand for the servers).
    plain = {k.removeprefix("OPENBELL_").lower(): re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", v)
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
    command = services["nats"]["command"]
    assert "-js" in command and "--websocket_port" in command
    assert "healthcheck" in services["nats"] and "healthcheck" in services["postgres"]


def test_the_image_holds_every_package_openbell_installs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = [p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]]
    dockerfile = (ROOT / "Dockerfile").read_text()
    for package in packages:
        assert re.search(rf"^COPY {package} \./{package}$", dockerfile, re.MULTILINE), package
    assert re.search(r"^USER (?!root)\w+", dockerfile, re.MULTILINE), "the services do not run as root"
    assert 'ENTRYPOINT ["openbell"]' in dockerfile
