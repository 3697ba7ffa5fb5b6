"""End to end, with real processes: an innocent picture that a bank's perceptual hash takes for
a banked one (a drawn scene whose layout shares the banked scene's PDQ hash within 18 bits) is
blocked by `schoolgate run`; the incident appears on `schoolgate console serve`; in headless
Chromium (Playwright driving Debian's `chromium`) the DSL signs in, opens it, acknowledges it,
adds a note and closes it as a false positive proposing an exemption; a deputy DSL approves the
exemption and exports CSV; the same upload is then delivered and audited as exempted, while the
banked picture itself stays blocked. Screenshots of each page go to build/console-screenshots/
(docs/dsl.md shows them).
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Dialog, Page, sync_playwright

from tests.conftest import encode
from tests.support.proxy_harness import (
    MEDIA_HOST,
    VENV_BIN,
    free_port,
    multipart_body,
    start_upstream,
)
from tests.support.screens import procedural_scene_pair
from tests.support.stack import ProxyStack, needs_private_hosts, proxy_stack

pytestmark = [pytest.mark.slow, needs_private_hosts]

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[2] / "build" / "console-screenshots"
PASSWORD = "e2e console password"
# Pupils name their files: this one would run script in a page that printed it raw.
HOSTILE_NAME = "<img src=x onerror=alert(1)>.jpg"
# As the probe of this kind of machine starts it: no background traffic to a closed network.
# A container's /dev/shm may be 64 MB: a renderer that runs out there dies, and Playwright
# says only "Target page, context or browser has been closed" (seen once under load).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]  # fmt: skip


def _schoolgate(data_dir: Path, *args: str, stdin: str | None = None) -> str:
    env = {**os.environ, "SCHOOLGATE_DATA_DIR": str(data_dir)}
    env.pop("SCHOOLGATE_CONFIG", None)
    done = subprocess.run([str(VENV_BIN / "schoolgate"), *args], input=stdin, env=env,
                          capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    return done.stdout


def _upload(stack: ProxyStack[Any], data: bytes) -> int:
    body, content_type = multipart_body("file", HOSTILE_NAME, data, "image/jpeg")
    with stack.client() as client:
        response = client.post(
            f"https://{MEDIA_HOST}:{stack.upstream.upstream.port}/upload/multipart",
            content=body,
            headers={"Content-Type": content_type},
        )
    return response.status_code


def _shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_the_dsl_works_an_incident_from_block_to_exemption(tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium (make sysdeps)")
    banked_scene, other_scene = procedural_scene_pair()
    photo = encode(other_scene, "JPEG", quality=90)
    leases = tmp_path / "dnsmasq.leases"  # the device's name comes from the DHCP server
    leases.write_text(f"{int(time.time()) + 3600} 02:00:5e:00:53:07 127.0.0.1 pupil-tablet-3 *\n")
    with proxy_stack(tmp_path, upstream=start_upstream, banked=banked_scene,
                     proxy={"dhcp_leases": [str(leases)]},
                     extra={"banks": {"reload_interval_s": 0.5}}) as stack:  # fmt: skip
        assert _upload(stack, photo) == 403
        assert stack.upstream.upstream.requests("/upload") == []
        (blocked,) = [d for d in stack.decisions() if d["decision"] == "block"]
        bank = blocked["matches"][0]["bank"]
        assert blocked["matches"][0]["distance"] > 8  # a near-match: a judgement, not the file

        for dsl in ("dana", "deputy"):  # an exemption takes two DSLs
            _schoolgate(stack.data_dir, "console", "user", "add", dsl, "--role", "dsl",
                        "--config", str(stack.config_path), "--password-stdin",
                        stdin=PASSWORD + "\n")  # fmt: skip
        port = free_port()
        env = {**os.environ, "SCHOOLGATE_DATA_DIR": str(stack.data_dir)}
        env.pop("SCHOOLGATE_CONFIG", None)
        log = (tmp_path / "console.log").open("wb")
        server = subprocess.Popen(
            [str(VENV_BIN / "schoolgate"), "console", "serve", "--config", str(stack.config_path),
             "--listen", f"127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        try:
            url = f"https://127.0.0.1:{port}"
            _wait_for_console(tmp_path / "console.log", server)
            downloaded = _drive_the_browser(url, tmp_path)
        finally:
            server.terminate()
            server.wait(timeout=20)
            log.close()

        # The export has the incident, its hash and the whole history, inert.
        (row,) = list(csv.DictReader(io.StringIO(downloaded)))
        assert row["sha256"] == blocked["hashes"]["sha256"]
        assert row["status"] == "closed"
        assert row["outcome"].startswith("False positive")
        assert "acknowledged" in row["history"]
        assert "exempted" in row["history"]
        assert "<img" not in downloaded

        # The same file is now delivered (once the workers' bank reload saw the exemption), and
        # the audit log says why.
        time.sleep(1.5)
        assert _upload(stack, photo) == 200
        assert len(stack.upstream.upstream.requests("/upload")) == 1
        allowed = [d for d in stack.decisions() if d["decision"] == "allow" and d.get("exempted")]
        assert allowed
        assert allowed[-1]["exempted"] == [f"bank:{bank}"]
        # Another encoding is another file, and the banked picture itself is still blocked.
        assert _upload(stack, encode(other_scene, "JPEG", quality=75)) == 403
        assert _upload(stack, encode(banked_scene, "JPEG", quality=90)) == 403


def _wait_for_console(log: Path, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"console exited: {log.read_text(errors='replace')}")
        if b"schoolgate console on" in log.read_bytes():
            time.sleep(0.5)  # gunicorn binds right after the line
            return
        time.sleep(0.1)
    raise AssertionError(f"console did not start: {log.read_text(errors='replace')}")


def _sign_in(page: Page, username: str) -> None:
    page.wait_for_selector("#username")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("#sign-in")
    page.wait_for_selector("#sign-out")


def _refuse(dialog: Dialog, seen: list[str]) -> None:
    seen.append(dialog.message)
    dialog.dismiss()


def _drive_the_browser(url: str, tmp_path: Path) -> str:
    dialogs: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            # The console's own self-signed certificate (staff trust it once, docs/dsl.md).
            context = browser.new_context(ignore_https_errors=True, accept_downloads=True,
                                          viewport={"width": 1280, "height": 900})  # fmt: skip
            page = context.new_page()
            page.on("dialog", lambda dialog: _refuse(dialog, dialogs))
            page.goto(f"{url}/")
            _shot(page, "1-sign-in")
            _sign_in(page, "dana")
            deadline = time.monotonic() + 30  # the incident appears: polled, bounded
            while page.locator("table.list a").count() == 0:
                assert time.monotonic() < deadline, "no incident on the console"
                page.wait_for_timeout(500)
                page.reload()
            _shot(page, "2-incidents")
            page.click("table.list a")
            page.wait_for_selector("#status")
            assert page.inner_text("#status") == "new"
            assert "pupil-tablet-3 (127.0.0.1, 02:00:5e:00:53:07)" in page.content()
            _shot(page, "3-incident")
            page.click("#acknowledge")
            page.wait_for_selector("#status:text('acknowledged')")
            page.fill("#note", "Art class drawing; the near-match is the shared scene layout.")
            page.click("#add-note")
            page.wait_for_selector("text=shared scene layout")
            page.select_option("#outcome-choice", "false_positive")
            page.check("input.exempt")
            _shot(page, "4-closing")
            page.click("#close")
            page.wait_for_selector("#status:text('closed')")
            # The deputy DSL approves the exemption (the proposer cannot).
            incident_url = page.url
            page.click("#sign-out")
            _sign_in(page, "deputy")
            page.goto(incident_url)
            page.wait_for_selector("#approve")
            _shot(page, "5-approval")
            page.click("#approve")
            page.wait_for_selector("text=approved")
            page.click("#summary")
            page.wait_for_selector("text=Referral summary")
            _shot(page, "6-referral-summary")
            page.goto(f"{url}/incidents")
            with page.expect_download() as download:
                page.click("#export-csv")
            saved = tmp_path / "export.csv"
            download.value.save_as(saved)
            page.click("text=Bank an incident")
            page.wait_for_selector("#bank-file")
            _shot(page, "7-banks")
        finally:
            browser.close()
    assert dialogs == []  # nothing a pupil named ran as script
    return saved.read_text("utf-8")
