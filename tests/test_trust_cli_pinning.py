"""The trust's commands for adversarial pass a35's second round: `banks publish` prints the
folder id that gateways name (F2) and keeps a lost one from being replaced (F6),
`check-config` says where a gateway follows the first folder it sees, and `hashes add` keeps
working on a school's own bank that a trust bundle also names (F5)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from schoolgate.banks.store import BankStore
from schoolgate.trust.bundle import generate_key, private_key_pem, public_key_text
from tests.conftest import encode
from tests.test_cli_scan import NO_MODELS, schoolgate


def test_publish_names_the_folder_and_gateways_pin_it(
    tmp_path: Path, data_dir: Path, benign_photos: dict[str, Image.Image]
) -> None:
    key = generate_key()
    (tmp_path / "publisher.key").write_bytes(private_key_pem(key))
    out = tmp_path / "www"
    with BankStore(tmp_path / "central.sqlite") as central:
        central.create_bank("incidents")  # the trust names its bank as a school does its own
    central_config = tmp_path / "central.yaml"
    central_config.write_text(NO_MODELS + f"banks:\n  path: {tmp_path / 'central.sqlite'}\n")
    command = ("banks", "publish", "incidents", "--key", str(tmp_path / "publisher.key"),
               "--out", str(out), "--channel", "trust")  # fmt: skip
    published = schoolgate(*command, config=central_config)
    assert published.returncode == 0, published.stderr
    folder = (out / "folder.id").read_text().strip()
    assert f'folder: {folder} (put `folder: "{folder}"` in each gateway' in published.stdout

    # F6: a lost folder.id is not replaced by a new one that every gateway would refuse
    (out / "folder.id").unlink()
    refused = schoolgate(*command, config=central_config)
    assert refused.returncode == 2
    assert f"restore it: echo {folder} > {out / 'folder.id'}" in refused.stderr
    (out / "folder.id").write_text(folder)

    entry = (f"    - name: trust\n      url: file://{out}/\n      public_key: "
             f"'{public_key_text(key.public_key())}'\n      channel: trust\n")  # fmt: skip
    gateway = tmp_path / "gateway.yaml"
    gateway.write_text(NO_MODELS + f"banks:\n  path: {tmp_path / 'gateway.sqlite'}\n"
                       f"  subscriptions:\n{entry}")  # fmt: skip
    checked = schoolgate("check-config", str(gateway), config=gateway)
    assert checked.returncode == 0, checked.stderr
    assert "note: banks.subscriptions trust: no `folder:`" in checked.stdout
    gateway.write_text(gateway.read_text() + f'      folder: "{folder}"\n')
    checked = schoolgate("check-config", str(gateway), config=gateway)
    assert checked.returncode == 0, checked.stderr
    assert "note: banks.subscriptions" not in checked.stdout
    # a41 F12: the school is not named, and a trust lead's alerts could be anyone's
    assert "note: proxy.school_name is not set" in checked.stdout
    named = tmp_path / "named.yaml"
    named.write_text(gateway.read_text() + "proxy:\n  school_name: North Academy\n")
    checked = schoolgate("check-config", str(named), config=named)
    assert checked.returncode == 0, checked.stderr
    assert "note:" not in checked.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(gateway.read_text().replace(folder, "staging"))
    checked = schoolgate("check-config", str(bad), config=bad)
    assert checked.returncode == 2
    assert "banks.subscriptions[0].folder" in checked.stderr

    # F5: the school's own bank named like the trust's: the trust's is withheld, and adding
    # to the school's own goes on, with a note on how to end the clash
    picture = tmp_path / "incident.jpg"
    picture.write_bytes(encode(benign_photos["coffee"], "JPEG", quality=90))
    added = schoolgate("hashes", "add", str(picture), "--bank", "incidents", config=gateway)
    assert added.returncode == 0, added.stderr
    synced = schoolgate("banks", "sync", config=gateway)
    assert "trust: updated" in synced.stdout, synced.stdout + synced.stderr
    assert "incidents is this school's own bank" in synced.stderr
    second = tmp_path / "second.jpg"
    second.write_bytes(encode(benign_photos["rocket"], "JPEG", quality=90))
    added = schoolgate("hashes", "add", str(second), "--bank", "incidents", config=gateway)
    assert added.returncode == 0, added.stderr  # a35 F5: refused as the subscription's
    assert "subscription trust also publishes a bank named incidents" in added.stderr
    assert "schoolgate hashes remove --bank incidents --all" in added.stderr
    removed = schoolgate("hashes", "remove", "--bank", "incidents", "--all", config=gateway)
    assert "subscription trust's bank of that name comes at its next sync" in removed.stdout


def test_publish_with_only_drop_stops_sharing_the_last_bank(tmp_path: Path) -> None:
    """a43 F6: `banks publish --drop X` alone was an argparse error (a BANK was required)."""
    key = generate_key()
    (tmp_path / "publisher.key").write_bytes(private_key_pem(key))
    out = tmp_path / "www"
    with BankStore(tmp_path / "school.sqlite") as school:
        school.create_bank("incident-x")
    config = tmp_path / "school.yaml"
    config.write_text(NO_MODELS + f"banks:\n  path: {tmp_path / 'school.sqlite'}\n")
    common = ("--key", str(tmp_path / "publisher.key"), "--out", str(out), "--channel", "north")
    assert schoolgate("banks", "publish", "incident-x", *common, config=config).returncode == 0
    nothing = schoolgate("banks", "publish", *common, config=config)
    assert nothing.returncode == 2
    assert "--drop" in nothing.stderr
    dropped = schoolgate("banks", "publish", "--drop", "incident-x", *common, config=config)
    assert dropped.returncode == 0, dropped.stderr
    assert "no bank (incident-x dropped)" in dropped.stdout
