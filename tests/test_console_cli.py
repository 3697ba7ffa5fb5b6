"""`schoolgate console user ...` and the console's certificate (made, reused, renewed, or the
school's own)."""

from __future__ import annotations

import io
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509

from schoolgate.cli import main
from schoolgate.config import load_config
from schoolgate.console.store import ConsoleStore
from schoolgate.console.tls import ConsoleTlsError, certificate, fingerprint

PASSWORD = "correct horse battery"


def test_accounts_are_managed_from_the_command_line(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["console", "user", "add", "dana", "--role", "dsl", "--password-stdin"]) == 0
    assert main(["console", "user", "list"]) == 0
    assert "dana\tdsl" in capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["console", "user", "add", "ivan", "--role", "it", "--password-stdin"]) == 2
    assert "at least 12 characters" in capsys.readouterr().err
    with ConsoleStore(load_config().console.database) as store:
        for _ in range(5):
            store.authenticate("dana", "wrong password!", max_failed=5, lockout_s=900)
        assert store.authenticate("dana", PASSWORD, max_failed=5, lockout_s=900)[1] == "locked"
    assert main(["console", "user", "unlock", "dana"]) == 0
    with ConsoleStore(load_config().console.database) as store:
        assert store.authenticate("dana", PASSWORD, max_failed=5, lockout_s=900)[1] == "ok"
    assert main(["console", "user", "remove", "dana"]) == 0
    assert main(["console", "user", "remove", "dana"]) == 2
    assert "no account named 'dana'" in capsys.readouterr().err


def test_the_appliance_makes_a_certificate_for_the_console_and_keeps_it(data_dir: Path) -> None:
    settings = replace(load_config().console, base_url="https://gw.school.example:8443")
    cert, key = certificate(settings, "10.0.0.1")
    loaded = x509.load_pem_x509_certificate(cert.read_bytes())
    names = loaded.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "gw.school.example" in names.get_values_for_type(x509.DNSName)
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["10.0.0.1"]
    assert key.stat().st_mode & 0o077 == 0  # the key is the service user's alone
    assert len(fingerprint(cert).split(":")) == 32
    # Kept while its names hold; made again when the console's address changes.
    assert certificate(settings, "10.0.0.1") == (cert, key)
    assert fingerprint(cert) == fingerprint(certificate(settings, "10.0.0.1")[0])
    before = fingerprint(cert)
    certificate(replace(settings, base_url="https://console.school.example"), "10.0.0.1")
    assert fingerprint(cert) != before


def test_the_schools_own_certificate_is_used_and_a_missing_one_is_a_clear_error(
    data_dir: Path, tmp_path: Path
) -> None:
    made, made_key = certificate(load_config().console, "127.0.0.1")
    settings = replace(load_config().console, cert_file=made, key_file=made_key,
                       made_cert_dir=tmp_path / "unused")  # fmt: skip
    assert certificate(settings, "127.0.0.1") == (made, made_key)
    assert not (tmp_path / "unused").exists()
    missing = replace(settings, cert_file=tmp_path / "school.crt")
    with pytest.raises(ConsoleTlsError, match=r"school\.crt cannot be read"):
        certificate(missing, "127.0.0.1")
    (tmp_path / "school.crt").write_text("not a certificate")
    with pytest.raises(ConsoleTlsError, match="not a readable PEM certificate"):
        certificate(missing, "127.0.0.1")


def test_concurrent_guesses_cannot_outrun_the_lock_out(data_dir: Path) -> None:
    """Adversarial pass a12 sent 30 sign-ins at once and had 16 checked before the lock."""
    with ConsoleStore(data_dir / "c.sqlite") as store:
        store.add_account("dana", "dsl", PASSWORD)
        start = threading.Barrier(30)

        def guess(number: int) -> str:
            start.wait(timeout=30)
            return store.authenticate("dana", f"wrong password {number}", max_failed=5,
                                      lockout_s=900)[1]  # fmt: skip

        with ThreadPoolExecutor(max_workers=30) as pool:
            answers = list(pool.map(guess, range(30)))
        # Four answered "wrong", the fifth locked the account; none of the rest was checked.
        assert answers.count("invalid") == 4
        assert answers.count("locked") == 26
        assert store.authenticate("dana", PASSWORD, max_failed=5, lockout_s=900)[1] == "locked"


def test_an_unknown_name_locks_like_a_real_one(data_dir: Path) -> None:
    """ "locked" must not tell that an account exists (adversarial pass a12)."""
    with ConsoleStore(data_dir / "c.sqlite") as store:
        store.add_account("dana", "dsl", PASSWORD)
        for name in ("dana", "nobody"):
            answers = [store.authenticate(name, "wrong password!", max_failed=5, lockout_s=900)[1]
                       for _ in range(6)]  # fmt: skip
            assert answers == ["invalid"] * 4 + ["locked"] * 2, name
