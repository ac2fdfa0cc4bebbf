"""Tenant configuration: production refuses development keys, docker-compose has no default
secrets, and the ``stylefarm keys`` / ``stylefarm tenants`` commands administer keys and limits."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.cli import main as cli
from shared.db import session as db_session
from shared.jobs import api_keys
from shared.settings import Settings

REPO = Path(__file__).resolve().parents[1]
PRODUCTION = {"env": "production", "database_url": "postgresql://u:p@db/stylefarm"}
INTERPOLATION = re.compile(r"(?<!\$)\$\{(\w+)(:?[-?])?([^}]*)\}")  # not $${...}: a shell variable at run time


@pytest.mark.parametrize("keys", ["dev-key=default", "key-a=acme", "short-but-not-24=acme"])
def test_production_refuses_development_and_short_keys(keys: str) -> None:
    with pytest.raises(ValidationError, match="development or short key"):
        Settings(**PRODUCTION, api_keys=keys)


def test_production_accepts_random_keys_or_none_in_the_environment() -> None:
    assert Settings(**PRODUCTION, api_keys=f"{api_keys.generate_key()}=acme").env == "production"
    assert Settings(**PRODUCTION).api_keys == ""  # keys in SQL only
    assert Settings(api_keys="dev-key=default").api_key_tenants() == {"dev-key": "default"}  # development


def test_compose_requires_every_secret_and_defaults_to_no_key() -> None:
    text = (REPO / "docker-compose.yml").read_text()
    uses: dict[str, set[str | None]] = {}
    for name, operator, _ in INTERPOLATION.findall(text):
        uses.setdefault(name, set()).add(operator or None)
    assert "STYLEFARM_ENV: production" in text
    for secret in ("STYLEFARM_API_KEYS", "POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD"):
        assert uses.get(secret) == {":?"}, f"{secret} must be required with ${{{secret}:?message}}: {uses.get(secret)}"
    assert "dev-key" not in text


@pytest.fixture
def cli_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("STYLEFARM_DATABASE_URL", url)
    yield url
    db_session.configure(None)
    db_session.dispose_engines()


def test_keys_create_prints_the_key_once_and_list_and_revoke_use_its_prefix(cli_db: str, capsys) -> None:
    # given a key created from the command line
    assert cli.main(["keys", "--database-url", cli_db, "create", "acme", "--name", "ci"]) == 0
    key = capsys.readouterr().out.strip()
    row = api_keys.lookup(key)
    assert row is not None and (row.tenant, row.name) == ("acme", "ci")
    # expect the listing to show its prefix and never the key
    assert cli.main(["keys", "--database-url", cli_db, "list"]) == 0
    listing = capsys.readouterr().out
    assert row.prefix in listing and key not in listing
    # and revoke by prefix to mark it revoked
    assert cli.main(["keys", "--database-url", cli_db, "revoke", row.prefix]) == 0
    assert api_keys.lookup(key).revoked_at is not None  # type: ignore[union-attr]
    assert cli.main(["keys", "--database-url", cli_db, "revoke", "sf_nothing"]) == cli.EXIT_ERROR


def test_keys_generate_prints_a_production_grade_key(capsys) -> None:
    assert cli.main(["keys", "generate"]) == 0
    key = capsys.readouterr().out.strip()
    assert Settings(**PRODUCTION, api_keys=f"{key}=acme").api_key_tenants() == {key: "acme"}


def test_tenants_set_limits_and_show(cli_db: str, capsys) -> None:
    assert cli.main(["tenants", "--database-url", cli_db, "set-limits", "acme", "--max-queued", "7",
                     "--max-job-cost", "60.5"]) == 0
    capsys.readouterr()
    assert cli.main(["tenants", "--database-url", cli_db, "show", "acme", "--json"]) == 0
    import json

    report = json.loads(capsys.readouterr().out)
    assert report["limits"]["max_queued_jobs"] == 7 and report["limits"]["max_job_cost"] == 60.5
    assert report["limits"]["max_jobs_in_flight"] == Settings().quota_max_jobs_in_flight
    assert report["usage"]["queued_jobs"] == 0
    assert cli.main(["tenants", "--database-url", cli_db, "set-limits", "acme", "--max-queued", "default"]) == 0
    capsys.readouterr()
    cli.main(["tenants", "--database-url", cli_db, "show", "acme", "--json"])
    assert json.loads(capsys.readouterr().out)["limits"]["max_queued_jobs"] == Settings().quota_max_queued_jobs
    with pytest.raises(SystemExit):
        cli.main(["tenants", "--database-url", cli_db, "set-limits", "acme", "--max-queued", "-3"])
