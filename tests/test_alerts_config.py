"""The `alerts:` configuration: safe defaults and clear errors for broken receivers."""

from __future__ import annotations

from pathlib import Path

import pytest

from schoolgate.cli import main
from schoolgate.config import parse_config
from schoolgate.errors import ConfigError


def alerts_yaml(body: str) -> str:
    return "alerts:\n" + "\n".join(f"  {line}" for line in body.strip().splitlines()) + "\n"


def error_for(body: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_config(alerts_yaml(body), "site.yaml")
    return caught.value


def test_defaults_keep_alerts_in_the_outbox_under_the_data_dir(data_dir: Path) -> None:
    config = parse_config("", "site.yaml")
    alerts = config.alerts
    assert alerts.outbox == data_dir / "alerts.sqlite"
    assert alerts.receivers == ()
    assert alerts.smtp is None
    assert "Do not open, view, copy" in alerts.guidance
    assert alerts.dead_after_s >= 24 * 3600
    assert not alerts.failure_blocks


def test_receivers_and_secret_files(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t\n")
    config = parse_config(
        alerts_yaml(f"""
receivers:
  - {{name: dsl, url: "https://hooks.example.org/a?x=1", secret_file: {secret}}}
  - {{name: teams, format: teams, url: "https://prod.example.org/workflows/1", timeout_s: 3}}
  - {{name: local, url: "http://127.0.0.1:9000/hook", secret: inline}}
  - {{name: lan, url: "http://10.0.0.5/hook", secret: x, allow_plain_http: true}}
"""),
        "site.yaml",
    )
    dsl, teams, local, lan = config.alerts.receivers
    assert dsl.secret == b"s3cr3t"  # the file's trailing newline is not part of it
    assert teams.secret is None
    assert teams.format == "teams"
    assert teams.timeout_s == 3
    assert local.secret == b"inline"
    assert lan.url.startswith("http://10.")
    assert "s3cr3t" not in repr(config)  # secrets stay out of logs and tracebacks
    assert config.alerts.channel_names == ("dsl", "teams", "local", "lan")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://example.org/hook", "not an http(s) URL"),
        ("not a url", "not an http(s) URL"),
        ("https://", "not an http(s) URL"),
        ("https://example.org:99999/hook", "not a valid URL"),
        ("https://exa mple.org/hook", "white space"),
        ("http://hooks.example.org/hook", "use https://"),
    ],
)
def test_a_bad_url_names_the_key(url: str, problem: str) -> None:
    error = error_for(f'receivers: [{{name: a, url: "{url}", secret: x}}]')
    assert error.source == "site.yaml"
    assert error.key_path == "alerts.receivers[0].url"
    assert problem in error.problem


def test_secret_file_problems_are_config_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    error = error_for(f"receivers: [{{name: a, url: https://e.org/h, secret_file: {missing}}}]")
    assert error.key_path == "alerts.receivers[0].secret_file"
    assert "file not found" in error.problem
    error = error_for(f"receivers: [{{name: a, url: https://e.org/h, secret_file: {tmp_path}}}]")
    assert "cannot be read" in error.problem
    empty = tmp_path / "empty"
    empty.write_text("\n")
    error = error_for(f"receivers: [{{name: a, url: https://e.org/h, secret_file: {empty}}}]")
    assert "is empty" in error.problem
    error = error_for(
        f"receivers: [{{name: a, url: https://e.org/h, secret: x, secret_file: {empty}}}]"
    )
    assert "either secret or secret_file" in error.problem


def test_receiver_rules() -> None:
    error = error_for("receivers: [{name: a, url: https://e.org/h}]")
    assert error.key_path == "alerts.receivers[0]"
    assert "needs a secret" in error.problem
    error = error_for(
        "receivers: [{name: a, url: https://e.org/h, secret: x}, "
        "{name: a, url: https://e.org/i, format: slack}]"
    )
    assert error.key_path == "alerts.receivers[1].name"
    error = error_for("receivers: [{name: a, url: https://e.org/h, format: pager, secret: x}]")
    assert error.key_path == "alerts.receivers[0].format"
    error = error_for("receivers: [{name: a, url: https://e.org/h, secret: x, colour: red}]")
    assert error.key_path == "alerts.receivers[0].colour"
    error = error_for("retry_base_s: 60\nretry_max_s: 10")
    assert error.key_path == "alerts.retry_max_s"


def test_receivers_routed_by_group_name_policy_groups() -> None:
    """A misspelt group would quietly leave a school's DSL without alerts: a config error."""
    policy = ("policy:\n  groups:\n    - {name: north-pupils, subnets: [10.1.0.0/16]}\n"
              "  default_group: north-pupils\n")  # fmt: skip
    receivers = "receivers: [{name: a, url: https://e.org/h, secret: x, groups: [%s]}]"
    config = parse_config(policy + alerts_yaml(receivers % "north-pupils"), "s.yaml")
    assert config.alerts.receivers[0].groups == ("north-pupils",)
    with pytest.raises(ConfigError) as caught:
        parse_config(policy + alerts_yaml(receivers % "north-pupil"), "s.yaml")
    assert caught.value.key_path == "alerts.receivers[0].groups[0]"
    assert "not a policy group" in caught.value.problem
    smtp = "smtp: {host: m, from: a@e.org, to: [dsl@e.org], groups: [south]}"
    with pytest.raises(ConfigError) as caught:
        parse_config(policy + alerts_yaml(smtp), "s.yaml")
    assert caught.value.key_path == "alerts.smtp.groups[0]"
    # a group no receiver names would have its alerts reach no one (a26)
    two = ("policy:\n  groups:\n    - {name: north-pupils, subnets: [10.1.0.0/16]}\n"
           "    - {name: south-pupils, subnets: [10.2.0.0/16]}\n"
           "  default_group: north-pupils\n")  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        parse_config(two + alerts_yaml(receivers % "north-pupils"), "s.yaml")
    assert caught.value.key_path == "alerts.receivers"
    assert "south-pupils" in caught.value.problem
    lead = ("receivers: [{name: a, url: https://e.org/h, secret: x, groups: [north-pupils]}, "
            "{name: lead, url: https://e.org/l, secret: y}]")  # fmt: skip
    assert len(parse_config(two + alerts_yaml(lead), "s.yaml").alerts.receivers) == 2


def test_smtp_rules() -> None:
    error = error_for("smtp: {host: mail.example.org, from: a@example.org}")
    assert error.key_path == "alerts.smtp.to"
    error = error_for("smtp: {host: m, from: nobody, to: [dsl@example.org]}")
    assert error.key_path == "alerts.smtp.from"
    error = error_for("smtp: {host: m, from: a@e.org, to: [dsl@e.org], username: u}")
    assert "both username and password" in error.problem
    config = parse_config(
        alerts_yaml("smtp: {host: m, from: a@e.org, to: [dsl@e.org], security: tls}"), "s.yaml"
    )
    assert config.alerts.smtp is not None
    assert config.alerts.smtp.port == 465


def test_check_config_reports_the_broken_receiver(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(
        alerts_yaml(f"receivers: [{{name: a, url: https://e.org/h, secret_file: {tmp_path}/x}}]")
    )
    assert main(["check-config", str(site)]) == 2
    err = capsys.readouterr().err
    assert f"{site}: alerts.receivers[0].secret_file:" in err
    assert "file not found" in err
    assert "Traceback" not in err
