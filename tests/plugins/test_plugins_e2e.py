"""Plugins on a real appliance: installed with the real CLI, routed to by the intent router,
run confined by the gateway, audited and counted; the example plugin as shipped, signed with
its test key, and a plugin that hangs, whose conversation still gets a clear reply."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from appliance.plugins.package import sign_plugin
from appliance.plugins.sandbox import sandbox_problem
from appliance.update import signing
from tests.conftest import Appliance

# bubblewrap comes with make debian-test-deps; user namespaces with the kernel.
SANDBOX_PROBLEM = sandbox_problem("bwrap", Path("/usr/bin/python3"))
pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(SANDBOX_PROBLEM is not None,
                                 reason=f"no plugin sandbox here: {SANDBOX_PROBLEM}")]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "plugins"
EXAMPLE = EXAMPLES / "deposit-interest"
EXAMPLE_KEY = EXAMPLES / "keys" / "example-plugin-test.pub"


@pytest.fixture(scope="module")
def plugins_dir() -> Iterator[Path]:
    """Where the box keeps plugins: a folder the plugins' own user can reach."""
    path = Path(tempfile.mkdtemp(prefix="box-plugins-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def author(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """This test's own plugin author: the private and the public key."""
    return signing.generate_keypair(tmp_path_factory.mktemp("author"), "test-author")


@pytest.fixture(scope="module")
def keyring(tmp_path_factory: pytest.TempPathFactory, author: tuple[Path, Path]) -> Path:
    """The box trusts the example's test key and this test's author."""
    folder = tmp_path_factory.mktemp("plugin-keyring")
    shutil.copy(EXAMPLE_KEY, folder / EXAMPLE_KEY.name)
    shutil.copy(author[1], folder / author[1].name)
    return folder


@pytest.fixture(scope="module")
def env(plugins_dir: Path, keyring: Path) -> dict[str, str]:
    return {"APPLIANCE_PLUGINS__DIR": str(plugins_dir),
            "APPLIANCE_PLUGINS__KEYRING_DIR": str(keyring),
            "APPLIANCE_PLUGINS__CALL_TIMEOUT_S": "3",
            "APPLIANCE_PLUGINS__RESTART_BACKOFF_S": "0.2",
            "APPLIANCE_PLUGINS__RESTART_BACKOFF_MAX_S": "0.3"}


@pytest.fixture(scope="module")
def box(start_module_appliance: Callable[..., Appliance], env: dict[str, str]) -> Appliance:
    return start_module_appliance(**env)


@pytest.fixture(scope="module")
def http(box: Appliance) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=box.base_url, timeout=180) as client:
        yield client


def plugins_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance", "plugins", *args],
                          env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.fixture(scope="module")
def example(env: dict[str, str], box: Appliance) -> None:
    done = plugins_cli(env, "install", str(EXAMPLE), "--approve")
    assert done.returncode == 0, done.stdout + done.stderr


def ask(http: httpx.Client, text: str) -> dict[str, Any]:
    conversation = f"plugins-{uuid.uuid4().hex[:8]}"
    reply = http.post("/v1/messages", json={"conversation": conversation, "text": text,
                                            "id": uuid.uuid4().hex})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    detail = http.get(f"/v1/conversations/{conversation}/messages/{body['id']}").json()
    return {**body, "intent": detail["message"]["intent"]}


def test_the_shipped_example_plugin_verifies_against_its_test_key(tmp_path: Path) -> None:
    from appliance.plugins.package import verify_plugin

    verified = verify_plugin(EXAMPLE, signing.load_keyring(EXAMPLE_KEY.parent))
    assert verified.manifest.plugin.name == "deposit-interest"


@pytest.mark.usefixtures("example")
def test_a_question_for_the_plugin_is_routed_to_it_and_answered(http: httpx.Client) -> None:
    answer = ask(http, "How much interest will 10000 earn at 2.5% for 3 years?")
    assert answer["intent"] == "interest"
    assert answer["reply"].startswith("10,000.00 at 2.5% a year for 3 years (simple interest): "
                                      "interest 750.00, 10,750.00 at maturity.")


@pytest.mark.usefixtures("example")
def test_a_question_in_chinese_gets_the_plugins_chinese_answer(http: httpx.Client) -> None:
    answer = ask(http, "两万元按3%年利率存5年复利，利息多少？")
    assert answer["intent"] == "interest"
    assert "利息 3,185.48" in answer["reply"]


@pytest.mark.usefixtures("example")
def test_a_plugin_skill_is_asked_by_name_and_listed(http: httpx.Client) -> None:
    assert "interest" in ask(http, "/skill")["reply"]
    assert "interest 160.00" in ask(http, "/skill interest 8000 at 2% for 1 year")["reply"]


def hanging_plugin(folder: Path, key_path: Path, name: str = "slowpoke",
                   version: str = "1.0.0", network: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "appliance-plugin.toml").write_text(textwrap.dedent(f"""
        [plugin]
        name = "{name}"
        version = "{version}"
        [capabilities]
        network = [{network}]
        [[skills]]
        name = "{name}"
        description = "Looks up the queue length at the counter."
        [skills.examples]
        en = ["How long is the queue at the counter?", "How many people are waiting?",
              "Is the queue long right now?"]
        """))
    (folder / "plugin.py").write_text(textwrap.dedent(f"""
        import time
        from appliance_plugin import run, skill

        @skill("{name}")
        def queue(call, box):
            time.sleep(3600)
        run()
        """))
    sign_plugin(folder, signing.load_private_key(key_path))
    return folder


@pytest.fixture(scope="module")
def slowpoke(env: dict[str, str], author: tuple[Path, Path], box: Appliance,
             tmp_path_factory: pytest.TempPathFactory) -> Path:
    key = author[0]
    folder = hanging_plugin(tmp_path_factory.mktemp("slowpoke") / "slowpoke", key)
    done = plugins_cli(env, "install", str(folder), "--approve")
    assert done.returncode == 0, done.stdout + done.stderr
    return key


def test_a_plugin_that_never_answers_gets_the_person_a_clear_error_in_time(
        http: httpx.Client, slowpoke: Path) -> None:
    answer = ask(http, "/skill slowpoke How long is the queue at the counter?")
    assert answer["reply"] == ("Sorry, the slowpoke skill could not answer (timeout: no answer "
                               "within 3 s). Please try again later, or ask a member of staff.")


def test_plugin_failures_are_counted_in_the_metrics(http: httpx.Client, slowpoke: Path
                                                    ) -> None:
    time.sleep(0.5)
    ask(http, "/skill slowpoke How many people are waiting?")
    metrics = http.get("/metrics").text
    assert 'appliance_plugin_events_total{event="timeout",plugin="slowpoke"}' in metrics


def test_plugin_calls_are_audited_with_how_they_ended(box: Appliance, env: dict[str, str],
                                                      http: httpx.Client, slowpoke: Path
                                                      ) -> None:
    time.sleep(0.5)  # past the restart backoff of the calls before: this one times out
    asked = ask(http, "/skill slowpoke Is the queue long right now?")
    audit_env = {**os.environ, **env, "APPLIANCE_PATHS__DATA_DIR": str(box.data_dir)}
    done = subprocess.run([sys.executable, "-m", "appliance", "audit", "tools", "--since", "1h",
                           "--json"], env=audit_env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    [call] = [c for c in json.loads(done.stdout) if c["message_id"] == asked["id"]]
    assert (call["skill"], call["plugin"], call["status"]) == ("slowpoke", "slowpoke", "error")
    assert call["detail"] == "timeout: no answer within 3 s"


def test_an_upgrade_asking_for_a_new_host_is_not_run_until_approved(
        http: httpx.Client, env: dict[str, str], slowpoke: Path,
        tmp_path: Path) -> None:
    folder = hanging_plugin(tmp_path / "slowpoke", slowpoke, version="1.1.0",
                            network='"queue.example.com"')
    done = plugins_cli(env, "install", str(folder))
    assert done.returncode == 0 and "queue.example.com" in done.stdout, done.stdout
    listed = json.loads(plugins_cli(env, "list", "--json").stdout)
    [record] = [p for p in listed if p["name"] == "slowpoke"]
    assert record["version"] == "1.0.0" and record["pending"]["version"] == "1.1.0"


def test_a_plugin_that_is_only_pending_is_not_offered(http: httpx.Client, env: dict[str, str],
                                                      slowpoke: Path, tmp_path: Path) -> None:
    folder = hanging_plugin(tmp_path / "newcomer", slowpoke, name="newcomer")
    assert plugins_cli(env, "install", str(folder)).returncode == 0
    assert ask(http, "/skill newcomer queue?")["reply"].startswith("Unknown skill 'newcomer'")


def test_the_dashboard_api_approves_a_waiting_plugin_and_it_is_offered(
        http: httpx.Client, env: dict[str, str], slowpoke: Path, tmp_path: Path) -> None:
    folder = hanging_plugin(tmp_path / "approved", slowpoke, name="approved")
    assert plugins_cli(env, "install", str(folder)).returncode == 0
    [waiting] = [p for p in http.get("/v1/plugins").json()["plugins"] if p["name"] == "approved"]
    assert waiting["version"] is None and waiting["pending"]["version"] == "1.0.0"
    approved = http.post("/v1/plugins/approved/approve")
    assert approved.status_code == 200, approved.text
    assert approved.json()["version"] == "1.0.0"
    assert "approved" in ask(http, "/skill")["reply"]


def test_approving_a_plugin_that_does_not_exist_is_a_404_naming_it(http: httpx.Client) -> None:
    reply = http.post("/v1/plugins/ghost/approve")
    assert reply.status_code == 404
    assert reply.json()["error"]["code"] == "plugin_not_found"
    assert "ghost" in reply.json()["error"]["message"]
