"""The knowledge base on the secured box: admin changes it, chat searches it, and the kb
verbs reach it with a token they sign themselves."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import Appliance
from tests.security.conftest import auth, cli, operator_token


def client(box: Appliance) -> httpx.Client:
    return httpx.Client(base_url=box.base_url, verify=box.verify, timeout=120)


def test_a_chat_token_may_search_but_not_upload_or_remove(secure_box: Appliance) -> None:
    chat = auth(operator_token(secure_box, "kiosk-kb", "chat"))
    with client(secure_box) as http:
        upload = http.post("/v1/kb/documents", headers=chat,
                           files={"file": ("a.txt", b"Opening hours are nine to five.")})
        assert upload.status_code == 403 and upload.json()["error"]["code"] == "scope"
        assert http.delete("/v1/kb/documents/doc-000000000000", headers=chat).status_code == 403
        assert http.get("/v1/kb/documents", headers=chat).status_code == 403
        assert http.post("/v1/kb/search", headers=chat,
                         json={"query": "opening hours"}).status_code == 200


def test_no_token_gets_nothing_from_the_knowledge_base(secure_box: Appliance) -> None:
    with client(secure_box) as http:
        assert http.post("/v1/kb/search", json={"query": "x"}).status_code == 401
        assert http.post("/v1/kb/documents",
                         files={"file": ("a.txt", b"text")}).status_code == 401


def test_the_kb_verbs_work_on_the_secured_box(secure_box: Appliance, tmp_path: Path) -> None:
    document = tmp_path / "vault.md"
    document.write_text("# Safe deposit\nThe vault opens at 10:00 on weekdays.\n")
    added = cli(secure_box, "kb", "add", str(document), "--collection", "secure")
    assert added.returncode == 0, added.stderr
    found = cli(secure_box, "kb", "search", "when does the vault open", "--json")
    assert found.returncode == 0, found.stderr
    assert "10:00" in found.stdout
    listed = cli(secure_box, "kb", "list", "--collection", "secure")
    assert "vault.md" in listed.stdout
