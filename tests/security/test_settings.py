"""NATS and database credential settings: refused in one line when inconsistent, never echoed, and turned
into the connection options every connection uses."""

from __future__ import annotations

import pytest

from services.core.runtime import external_nats_credentials, faststream_options
from services.core.settings import SettingsError, load_settings

URL = "nats://nats.example:4222"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"nats_url": URL, "nats_user": "u", "nats_token": "t0ken-secret"}, "give one NATS identity"),
        ({"nats_url": URL, "nats_password": "pw-secret"}, "NATS_PASSWORD needs OPENBELL_NATS_USER"),
        ({"nats_user": "u", "nats_password": "pw-secret"}, "set OPENBELL_NATS_URL"),
        ({"database_owner_url": "postgresql://o:pw-secret@h/db"}, "DATABASE_OWNER_URL needs"),
        ({"nats_websocket_origins": " , "}, "at least one origin"),
        ({"nats_websocket_origins": "http://ok.example/path"}, "without a path"),
    ],
)
def test_inconsistent_credentials_are_refused_in_one_line_without_the_secret(
    overrides: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(**overrides)
    text = str(refused.value)
    assert message in text and "\n" not in text and "secret" not in text


def test_an_external_identity_reaches_every_connection_and_stays_out_of_reprs() -> None:
    settings = load_settings(nats_url=URL, nats_user="services", nats_password="pw-secret")
    assert "pw-secret" not in repr(settings)
    credentials = external_nats_credentials(settings)
    assert "pw-secret" not in repr(credentials)
    # The same identity for every role: an external server's identity is the process's.
    assert credentials.connect_options("clock") == {"user": "services", "password": "pw-secret"}
    assert not credentials.per_role
    security = faststream_options(credentials.connect_options("services"))["security"]
    assert type(security).__name__ == "NatsUserPassword"
    token = external_nats_credentials(load_settings(nats_url=URL, nats_token="t0ken-secret"))
    assert token.connect_options("services") == {"token": "t0ken-secret"}
