"""The dashboard's Knowledge page in headless Chromium, against a real appliance (tokens
required, the real engine with the real LLM and embedding model): documents are uploaded
through the page's file input, searched from its form and removed with its buttons, the way
an operator would, and what the page shows is checked against what the /v1/kb API holds.

The page is driven over the DevTools protocol (Chromium's --remote-debugging-port): real
mouse clicks and typed text, DOM.setFileInputFiles for the file chooser. Every test also
checks that the page's script threw nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser import Page, checked, needs_chromium
from tests.conftest import Appliance
from tests.security.conftest import auth, operator_token

pytestmark = [pytest.mark.e2e, needs_chromium]

# For people: the page after an upload and a search is saved where this names, if set.
SCREENSHOT = "DASHBOARD_KNOWLEDGE_SCREENSHOT"
FACT = "The Harbourside branch vault opens at 07:45 on weekdays; the code word is PELICAN-42."
MARKUP = "Tellers never type <b>codes</b> or <img src=x onerror=alert(1)> into the chat."
NAME = "vault <em>hours.md"  # a name that would be markup if the page used innerHTML
FILLER = [
    "## Counter service\n\nThe counter serves personal and business customers. Cash deposits "
    "above the daily limit need a second teller's signature, and foreign currency is ordered "
    "two working days ahead. Safe deposit boxes are rented by the year.",
    "## Lending desk\n\nMortgage advisers see customers by appointment only. A first meeting "
    "takes about an hour; bring proof of income, a passport and the last three bank "
    "statements. Car loans and overdrafts are handled at the counter.",
    "## Accessibility\n\nThe branch has step-free access from the harbour side, a hearing "
    "loop at every counter and a quiet room that can be booked by phone. Guide dogs are "
    "welcome everywhere in the branch.",
    "## Closures\n\nThe branch closes on public holidays and at 13:00 on the last working "
    "day of the year. Cash machines outside stay available around the clock.",
]


def markdown() -> str:
    return "\n\n".join(["# Harbourside branch handbook",
                        f"## Vault\n\n{FACT} {MARKUP}", *FILLER]) + "\n"


# -- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def box(start_module_appliance: Callable[..., Appliance]) -> Appliance:
    return start_module_appliance(APPLIANCE_SECURITY__AUTH="true")


@pytest.fixture(scope="module")
def admin(box: Appliance) -> str:
    return operator_token(box, "kb-admin", "admin")


@pytest.fixture(scope="module")
def http(box: Appliance, admin: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=box.base_url, headers=auth(admin), timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Page]:
    page = Page(tmp_path_factory.mktemp("chromium"))
    yield page
    page.close()


@pytest.fixture
def page(browser: Page, box: Appliance, admin: str) -> Iterator[Page]:
    """The dashboard, freshly loaded with the admin token, on its Knowledge tab."""
    browser.goto(f"{box.base_url}/dashboard?access_token={admin}")
    browser.click("#tab-knowledge")
    browser.wait_for("!document.getElementById('page-knowledge').hidden && "
                     "document.getElementById('kb-documents').hasAttribute('data-rows')")
    yield from checked(browser)


@pytest.fixture
def after_upload(browser: Page, uploaded: dict[str, Any]) -> Iterator[Page]:
    """The page just as the handbook's upload left it."""
    yield from checked(browser)


def listed(page: Page) -> list[dict[str, Any]]:
    """The rows of the page's documents table."""
    rows = page.evaluate("""[...document.querySelectorAll('#kb-documents tbody tr[data-id]')]
        .map((tr) => ({id: tr.dataset.id, cells: [...tr.cells].map((td) => td.textContent),
                       markup: tr.querySelectorAll('td:not(:last-child) *').length}))""")
    assert isinstance(rows, list)
    return rows


def upload(page: Page, *files: Path, collection: str | None = None) -> list[dict[str, str]]:
    """Choose ``files``, press Upload, and wait for each one's line to settle; records every
    state each line went through (so a progress bar that was shown is known)."""
    page.evaluate("""window.seen = {};
        new MutationObserver((changes) => { for (const c of changes) {
          const node = c.target.closest && c.target.closest('li.upload');
          if (!node) continue;
          const name = node.dataset.name, bar = node.querySelector('progress');
          const states = (window.seen[name] = window.seen[name] || []);
          const state = node.dataset.state + (bar && bar.max > 1 ? ':' + bar.max : '');
          if (states[states.length - 1] !== state) states.push(state);
        } }).observe(document.getElementById('kb-uploads'),
                     {subtree: true, childList: true, attributes: true,
                      attributeFilter: ['data-state', 'max', 'value']});
        document.getElementById('kb-uploads').replaceChildren(); true""")
    if collection is not None:
        page.type("#kb-collection", collection)
    page.choose_files("#kb-files", *files)
    page.click("#kb-upload-button")
    page.wait_for(f"""(() => {{
        const items = [...document.querySelectorAll('#kb-uploads li.upload')];
        return items.length === {len(files)} && !document.getElementById('kb-upload-button')
          .disabled && items.every((li) => !['uploading', 'indexing'].includes(li.dataset.state));
    }})()""", timeout=180)
    lines = page.evaluate("""[...document.querySelectorAll('#kb-uploads li.upload')].map((li) =>
        ({name: li.dataset.name, state: li.dataset.state,
          message: li.querySelector('.message').textContent,
          seen: (window.seen[li.dataset.name] || []).join(' ')}))""")
    assert isinstance(lines, list)
    return lines


def search(page: Page, query: str) -> list[dict[str, Any]]:
    page.evaluate("document.getElementById('kb-results').removeAttribute('data-results')")
    page.type("#kb-query", query)
    page.click("#kb-search-button")
    page.wait_for("document.getElementById('kb-results').hasAttribute('data-results')")
    hits = page.evaluate("""[...document.querySelectorAll('#kb-results li.hit')].map((li) =>
        ({name: li.querySelector('.hit-name').textContent,
          chunk: li.querySelector('.hit-chunk').textContent,
          score: li.querySelector('.hit-score').textContent,
          text: li.querySelector('.passage').textContent,
          markup: li.querySelectorAll('.passage *, .hit-name *').length}))""")
    assert isinstance(hits, list)
    return hits


@pytest.fixture(scope="module")
def handbook(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("docs") / NAME
    path.write_text(markdown(), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def uploaded(browser: Page, box: Appliance, admin: str, http: httpx.Client,
             handbook: Path) -> dict[str, Any]:
    """The handbook, uploaded through the page into collection "branch"; the lines the page
    showed for it, and the document as the API lists it."""
    browser.goto(f"{box.base_url}/dashboard?access_token={admin}")
    browser.click("#tab-knowledge")
    browser.wait_for("document.getElementById('kb-documents').hasAttribute('data-rows')")
    lines = upload(browser, handbook, collection="branch")
    documents = [d for d in http.get("/v1/kb/documents").json()["documents"]
                 if d["name"] == NAME]
    assert len(documents) == 1, (lines, documents)
    return {"lines": lines, "document": documents[0]}


# -- the page ---------------------------------------------------------------------------------
def test_uploading_a_markdown_document_lists_it_with_its_chunk_count(
        after_upload: Page, uploaded: dict[str, Any]) -> None:
    page = after_upload
    document = uploaded["document"]
    [line] = uploaded["lines"]
    assert document["chunks"] > 1 and document["collection"] == "branch"
    assert line["state"] == "done", line
    assert line["message"].startswith(f"{document['chunks']} chunks in branch"), line
    # The progress bar was shown while it indexed, sized to the document's chunks.
    assert f"indexing:{document['chunks']}" in line["seen"].split(), line
    rows = {row["id"]: row["cells"] for row in listed(page)}
    name, collection, kind, size, chunks, added, button = rows[document["id"]]
    assert (name, collection, kind, chunks) == (NAME, "branch", "md", str(document["chunks"]))
    assert size.endswith(("B", "KB")) and button == "Remove"
    assert added[:4].isdigit() and added[4] == "-" and len(added) == 19, added
    summary = page.text("#kb-collections")
    assert "branch 1 document" in summary and f"{document['chunks']} chunks" in summary, summary


def test_a_search_on_the_page_shows_the_passage_with_the_known_fact(
        after_upload: Page, uploaded: dict[str, Any]) -> None:
    page = after_upload
    hits = search(page, "When does the Harbourside vault open?")
    assert hits, page.text("#kb-search")
    found = [h for h in hits if h["name"] == NAME and FACT in h["text"]]
    assert found, hits
    assert found[0]["chunk"].startswith("chunk ") and \
        found[0]["chunk"].endswith(f" of {uploaded['document']['chunks']}"), found[0]
    assert found[0]["score"].startswith("score ") and \
        len(found[0]["score"].split()[1].split(".")[1]) == 2, found[0]
    if os.environ.get(SCREENSHOT):
        page.screenshot(Path(os.environ[SCREENSHOT]))


def test_document_names_and_passages_are_shown_as_text_never_as_markup(
        page: Page, uploaded: dict[str, Any]) -> None:
    hits = search(page, "PELICAN-42 codes chat")
    passage = next(h for h in hits if MARKUP in h["text"])
    assert passage["markup"] == 0, passage
    assert all(row["markup"] == 0 for row in listed(page))
    assert page.evaluate("document.querySelectorAll('main img, main em').length") == 0


def test_removing_a_document_from_the_page_takes_it_off_the_list(
        page: Page, http: httpx.Client, tmp_path: Path) -> None:
    memo = tmp_path / "memo.txt"
    memo.write_text("Staff memo: the car park barrier is being repaired until Friday.\n")
    [line] = upload(page, memo)
    assert line["state"] == "done", line
    [memo_id] = [row["id"] for row in listed(page) if row["cells"][0] == "memo.txt"]
    others = {row["id"] for row in listed(page)} - {memo_id}
    button = f'#kb-documents button.remove[data-id="{memo_id}"]'
    page.click(button)  # the first click only asks
    assert page.text(button) == "Confirm"
    assert memo_id in {row["id"] for row in listed(page)}
    page.click(button)
    page.wait_for(f"!document.querySelector('{button}')")
    assert {row["id"] for row in listed(page)} == others
    assert memo_id not in {d["id"] for d in http.get("/v1/kb/documents").json()["documents"]}
    assert "removed memo.txt" in page.text("#kb-status")


def test_an_empty_or_binary_file_shows_the_servers_error_and_changes_no_list(
        page: Page, http: httpx.Client, tmp_path: Path) -> None:
    empty, binary = tmp_path / "empty.txt", tmp_path / "firmware.txt"
    empty.write_bytes(b"")
    binary.write_bytes(bytes(range(256)) * 8)
    expected = {}
    for path in (empty, binary):  # what the server says about each, asked directly
        answer = http.post("/v1/kb/documents", files={"file": (path.name, path.read_bytes())})
        assert answer.status_code == 400, answer.text
        expected[path.name] = answer.json()["error"]["message"]
    before = listed(page)
    lines = upload(page, empty, binary)
    assert {line["name"]: (line["state"], line["message"]) for line in lines} == \
        {name: ("error", message) for name, message in expected.items()}
    assert "is empty" in expected["empty.txt"] and "binary" in expected["firmware.txt"]
    assert listed(page) == before
    if os.environ.get(SCREENSHOT):
        page.screenshot(Path(os.environ[SCREENSHOT]).with_suffix(".errors.png"))
    assert not {"empty.txt", "firmware.txt"} & {
        d["name"] for d in http.get("/v1/kb/documents").json()["documents"]}


# -- with the knowledge base off --------------------------------------------------------------
def test_with_the_knowledge_base_off_the_page_shows_why(
        start_module_appliance: Callable[..., Appliance], browser: Page) -> None:
    off = start_module_appliance(APPLIANCE_KB__EMBEDDING_MODEL="")
    answer = httpx.get(f"{off.base_url}/v1/kb/documents", timeout=30)
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "kb_unavailable"
    browser.goto(f"{off.base_url}/dashboard#knowledge")
    notice = browser.wait_for("""(() => { const n = document.getElementById('kb-status');
        return !n.hidden && n.dataset.code === 'kb_unavailable' && n.textContent; })()""")
    assert answer.json()["error"]["message"] in notice
    assert "the knowledge base is off" in browser.text("#kb-documents")
    hits = search(browser, "anything")
    assert hits == [] and answer.json()["error"]["message"] in browser.text("#kb-search-status")
    assert not browser.exceptions, browser.exceptions
