"""The operator's security verbs: clear errors (exit 2) and the sealed store read back."""

from __future__ import annotations

import httpx

from tests.conftest import Appliance
from tests.security.conftest import auth, cli, operator_token


def test_an_unknown_scope_is_refused_with_exit_code_2(secure_box: Appliance) -> None:
    done = cli(secure_box, "token", "issue", "--sub", "x", "--scope", "root")
    assert done.returncode == 2
    assert "unknown scope root" in done.stderr


def test_a_bad_ttl_is_refused_with_exit_code_2(secure_box: Appliance) -> None:
    done = cli(secure_box, "token", "issue", "--sub", "x", "--scope", "chat", "--ttl", "soon")
    assert done.returncode == 2
    assert "duration 'soon'" in done.stderr


def test_a_subject_that_could_inject_topics_is_refused(secure_box: Appliance) -> None:
    done = cli(secure_box, "token", "issue", "--sub", "a/#", "--scope", "chat")
    assert done.returncode == 2
    assert "subject" in done.stderr


def test_messages_show_decrypts_what_the_store_sealed(secure_box: Appliance) -> None:
    token = operator_token(secure_box, "olivia", "chat")
    response = httpx.post(f"{secure_box.base_url}/v1/messages", headers=auth(token),
                          verify=secure_box.verify, timeout=60,
                          json={"id": "s1", "conversation": "olivia-1", "text": "/help"})
    assert response.status_code == 200
    done = cli(secure_box, "messages", "show", "s1", "--conversation", "olivia-1")
    assert done.returncode == 0, done.stderr
    assert "/help" in done.stdout and "olivia" in done.stdout


def test_keys_list_names_the_active_keys(secure_box: Appliance) -> None:
    done = cli(secure_box, "keys", "list")
    assert done.returncode == 0
    assert "signing" in done.stderr and "(active)" in done.stderr
    assert "data" in done.stderr
