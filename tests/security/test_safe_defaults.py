"""Safe defaults: no exposed listener without TLS and auth; doctor audits the box."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.security.pki import init_ca, issue_server, tls_files


def run(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "APPLIANCE_PATHS__DATA_DIR": str(data_dir),
                "APPLIANCE_CONFIG": str(data_dir / "none.toml"), **env}
    return subprocess.run([sys.executable, "-m", "appliance", *args], env=full_env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("env", [
    {"APPLIANCE_HTTP__HOST": "0.0.0.0"},
    {"APPLIANCE_HTTP__HOST": "0.0.0.0", "APPLIANCE_SECURITY__AUTH": "false",
     "APPLIANCE_SECURITY__TLS": "true"},
    {"APPLIANCE_MQTT__HOST": "::"},
])
def test_up_refuses_a_network_listener_without_tls_and_auth(tmp_path: Path,
                                                            env: dict[str, str]) -> None:
    done = run(tmp_path, "up", **env)
    assert done.returncode == 2
    assert "refusing to start" in done.stderr
    assert "insecure_expose_without_tls_or_auth" in done.stderr


def test_the_gateway_alone_refuses_too(tmp_path: Path) -> None:
    done = run(tmp_path, "gateway", APPLIANCE_HTTP__HOST="0.0.0.0")
    assert done.returncode == 2
    assert "refusing to start" in done.stderr


def doctor(data_dir: Path, **env: str) -> tuple[int, list[dict]]:
    done = run(data_dir, "doctor", "--json", **env)
    return done.returncode, json.loads(done.stdout)["findings"]


def test_doctor_flags_a_secret_readable_by_others(tmp_path: Path) -> None:
    assert run(tmp_path, "keys", "init").returncode == 0
    key = next((tmp_path / "secrets" / "jwt").glob("*.key"))
    key.chmod(0o644)
    code, findings = doctor(tmp_path)
    assert code == 1
    assert any(str(key) in f["message"] and f["level"] == "error" for f in findings)


def test_doctor_flags_a_certificate_about_to_expire(tmp_path: Path) -> None:
    files = tls_files(tmp_path / "secrets")
    init_ca(files)
    issue_server(files, [], days=5)
    code, findings = doctor(tmp_path, APPLIANCE_SECURITY__TLS="true")
    assert code == 1
    assert any("expires in" in f["message"] for f in findings)


def test_doctor_passes_a_box_with_default_security(tmp_path: Path) -> None:
    assert run(tmp_path, "keys", "init").returncode == 0
    code, findings = doctor(tmp_path)
    assert [f for f in findings if f["level"] == "error"] == []
    assert code == 0


def test_doctor_flags_encrypted_records_whose_key_file_is_gone(tmp_path: Path) -> None:
    from appliance.config import load
    from appliance.envelope import Envelope
    from appliance.store.db import connect, open_cipher
    from appliance.store.messages import MessageStore

    os.environ["APPLIANCE_PATHS__DATA_DIR"] = str(tmp_path)
    try:
        settings = load(tmp_path / "none.toml").settings
    finally:
        del os.environ["APPLIANCE_PATHS__DATA_DIR"]
    store = MessageStore(connect(settings.paths.database), open_cipher(settings))
    store.accept(Envelope(id="m1", conversation="c1", channel="http", sender="s", text="hi"))
    store.db.close()
    (tmp_path / "secrets" / "data.keys").unlink()
    code, findings = doctor(tmp_path)
    assert code == 1
    assert any("data.keys is missing" in f["message"] for f in findings)


def test_the_loud_setting_lets_an_exposed_box_start_and_doctor_still_flags_it(
        tmp_path: Path) -> None:
    from appliance.config import Settings
    from appliance.security.audit import audit
    from appliance.security.exposure import exposure_problems

    settings = Settings(http={"host": "0.0.0.0"}, security={
        "auth": False, "insecure_expose_without_tls_or_auth": True},
        paths={"data_dir": tmp_path})
    assert exposure_problems(settings) == []
    assert any(f.level == "error" and "insecure_expose" in f.message
               for f in audit(settings))
