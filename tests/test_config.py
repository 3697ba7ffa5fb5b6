"""Config loading: the embedded default is valid, and every error names file, key path, problem."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from schoolgate.config import load_config, parse_config
from schoolgate.errors import ConfigError
from schoolgate.pipeline.settings import DEFAULT_FAIL


def test_embedded_default_loads(data_dir: Path) -> None:
    config = load_config()
    assert config.data_dir == data_dir
    assert config.banks.path == data_dir / "banks.sqlite"
    assert config.audit.path == data_dir / "audit" / "decisions.jsonl"
    assert config.policy.default_group == "students"
    enabled = [m.name for m in config.classifier.models if m.enabled]
    assert enabled == ["open_nsfw"]  # NudeNet is opt-in (licence)
    assert config.proxy.mode == "regular"


def test_empty_file_means_all_defaults(data_dir: Path) -> None:
    config = parse_config("", "empty.yaml")
    assert config.banks.pdq_max_distance == 31
    assert [g.name for g in config.policy.groups] == ["everyone"]
    assert config.policy.groups[0].fail == DEFAULT_FAIL


def test_environment_selects_config_file(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site.yaml"
    site.write_text("proxy:\n  listen_port: 3128\n")
    monkeypatch.setenv("SCHOOLGATE_CONFIG", str(site))
    assert load_config().proxy.listen_port == 3128
    assert load_config().source == str(site)


@pytest.mark.parametrize(
    ("text", "key_path", "problem"),
    [
        ("proxy:\n  listen_port: 70000\n", "proxy.listen_port", "above the maximum"),
        ("proxy:\n  listen_port: eighty\n", "proxy.listen_port", "expected a whole number"),
        ("proxy:\n  mode: invisible\n", "proxy.mode", "not one of: regular, transparent"),
        ("proxy:\n  listen_host: gateway\n", "proxy.listen_host", "not an IP address"),
        ("banks:\n  pdq_max_distanse: 20\n", "banks.pdq_max_distanse", "unknown key"),
        ("colour: blue\n", "colour", "unknown key"),
        (
            "policy:\n  groups:\n    - name: a\n      subnets: [10.0.0/33]\n",
            "policy.groups[0].subnets[0]",
            "not an IP address or network",
        ),
        (
            "policy:\n  groups:\n    - name: a\n    - name: a\n",
            "policy.groups[1].name",
            "duplicate group name",
        ),
        (
            "policy:\n  groups:\n    - name: a\n  default_group: b\n",
            "policy.default_group",
            "no group named 'b'",
        ),
        (
            "policy:\n  groups:\n    - name: a\n      fail: {timeout: maybe}\n",
            "policy.groups[0].fail.timeout",
            "not one of: block, allow",
        ),
        (
            "policy:\n  groups:\n    - name: a\n      devices: [not-a-mac]\n",
            "policy.groups[0].devices[0]",
            "not a MAC address",
        ),
        (
            "policy:\n  groups:\n    - name: a\n"
            "      schedule: [{days: [mon], start: '8am', end: '16:00'}]\n",
            "policy.groups[0].schedule[0].start",
            "not a time of day",
        ),
        ("policy:\n  timezone: Mars/Olympus\n", "policy.timezone", "not a known time zone"),
        (
            "classifier:\n  models:\n    - name: m\n      adapter: tensorflow\n"
            "      thresholds: {x: 0.5}\n",
            "classifier.models[0].adapter",
            "not one of",
        ),
        (
            "classifier:\n  models:\n    - name: m\n      adapter: onnx\n",
            "classifier.models[0].thresholds",
            "at least one label",
        ),
        (
            "classifier:\n  models:\n    - name: m\n      adapter: onnx\n"
            "      thresholds: {x: 1.5}\n",
            "classifier.models[0].thresholds.x",
            "above the maximum",
        ),
        ("limits: [1, 2]\n", "limits", "expected a mapping"),
        (
            "proxy:\n  max_held_body_bytes: 2000000\n  max_held_device_bytes: 1000000\n",
            "proxy.max_held_device_bytes",
            "below the minimum",
        ),
        ("proxy:\n  max_wait_s: 0\n", "proxy.max_wait_s", "below the minimum"),
    ],
)
def test_errors_name_key_path_and_problem(
    data_dir: Path, text: str, key_path: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "site.yaml")
    error = caught.value
    assert error.source == "site.yaml"
    assert error.key_path == key_path
    assert problem in error.problem
    assert str(error).startswith(f"site.yaml: {key_path}: ")


def test_yaml_syntax_error_names_the_line(data_dir: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("proxy:\n  mode: [regular\n", "broken.yaml")
    assert caught.value.key_path.startswith("line ")
    assert "invalid YAML" in caught.value.problem


def test_missing_file_is_a_clear_error(tmp_path: Path, data_dir: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml")


def test_check_config_command_exit_codes(tmp_path: Path, data_dir: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("proxy:\n  listen_port: 8081\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("proxy:\n  listen_port: -1\n")
    cmd = [sys.executable, "-m", "schoolgate.cli", "check-config"]
    ok = subprocess.run([*cmd, str(good)], capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout
    failed = subprocess.run([*cmd, str(bad)], capture_output=True, text=True, check=False)
    assert failed.returncode == 2
    assert f"{bad}: proxy.listen_port: -1 is below the minimum 1" in failed.stderr
    assert "Traceback" not in failed.stderr


def test_held_memory_budgets_scale_with_the_body_cap(data_dir: Path) -> None:
    default = parse_config("", "site.yaml").proxy
    assert (default.max_held_device_bytes, default.max_held_total_bytes) == (128 << 20, 512 << 20)
    big = parse_config("proxy:\n  max_held_body_bytes: 268435456\n", "site.yaml").proxy
    assert big.max_held_device_bytes == 2 * big.max_held_body_bytes
    assert big.max_held_total_bytes == 4 * big.max_held_device_bytes


def test_an_item_may_wait_for_a_worker_beyond_its_inspection_budget(data_dir: Path) -> None:
    default = parse_config("", "site.yaml")
    assert (default.proxy.inspect_timeout_s, default.proxy.max_wait_s) == (15.0, 60.0)
    # A video may take 2.5 s more for each minute it declares, up to the 10-minute cap.
    assert default.video_inspect_s == 40.0
    assert default.longest_judgement_s == 100.0
    site = parse_config("proxy:\n  max_wait_s: 5\nlimits:\n  video:\n"
                        "    time_budget_per_minute_s: 0\n", "site.yaml")  # fmt: skip
    assert site.longest_judgement_s == 20.0


def test_a_videos_time_budget_grows_with_its_declared_length() -> None:
    video = parse_config("", "site.yaml").limits.video
    assert video.budget_for(None) == 10.0  # undeclared: the base budget
    assert video.budget_for(240) == 20.0  # a 4-minute recording
    assert video.budget_for(6000) == 35.0  # never past the duration cap's
    fixed = parse_config("limits:\n  video:\n    time_budget_per_minute_s: 0\n", "s.yaml")
    assert fixed.limits.video.budget_for(240) == 10.0


def test_the_old_pinned_action_key_still_loads_with_a_warning(
    data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Installs copied the old default file: it must keep loading (issue 17 made the catalog's
    when_not_inspectable decide for pinned apps)."""
    with caplog.at_level(logging.WARNING, logger="schoolgate.config"):
        proxy = parse_config("proxy:\n  pinned_action: block\n", "site.yaml").proxy
    assert proxy.pinned_ttl_s == 86400
    assert "pinned_action is ignored" in caplog.text
