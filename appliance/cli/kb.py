"""``appliance kb``: the branch's documents, through the running gateway.

The gateway owns the knowledge base (its vector index is in the gateway's memory and the
embeddings come from its engine), so these verbs are HTTP clients of it on the box. With
``security.auth`` on they mint a short-lived admin token from the box's signing key, as
only someone who can read the box's secrets could.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from appliance.cli.common import ConfigOption, console, err_console, fail, load_settings
from appliance.config import Settings

kb_app = typer.Typer(no_args_is_help=True, help="The knowledge base: documents the "
                     "assistant answers from.")
ACCEPTED = (".txt", ".text", ".md", ".markdown", ".html", ".htm", ".pdf", ".docx")
TOKEN_TTL_S = 900
UPLOAD_TIMEOUT_S = 3600.0


class Gateway:
    def __init__(self, settings: Settings) -> None:
        import httpx

        from appliance.local_gateway import local_gateway

        gateway = local_gateway(settings)
        headers = {}
        if settings.security.auth:
            from appliance.security.access import signing_keys
            from appliance.security.tokens import KeyringError, issue

            try:
                token, _ = issue(signing_keys(settings), sub="cli-kb", scopes=["admin", "chat"],
                                 ttl_s=TOKEN_TTL_S, issuer=settings.security.issuer,
                                 audience=settings.security.audience)
            except (KeyringError, OSError) as exc:
                raise fail(f"cannot sign an admin token for the gateway: {exc}") from None
            headers["Authorization"] = f"Bearer {token}"
        try:
            verify = gateway.verify()
        except OSError as exc:
            raise fail(f"cannot read the box's CA ({exc}); has the gateway ever started?"
                       ) from None
        self.url = gateway.base_url
        self.http = httpx.Client(base_url=gateway.base_url, headers=headers, verify=verify,
                                 timeout=httpx.Timeout(60.0, read=UPLOAD_TIMEOUT_S))

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *_: object) -> None:
        self.http.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            reply = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise fail(f"the gateway at {self.url} does not answer ({exc}); is the appliance "
                       "running (appliance up)?") from None
        if reply.status_code >= 400:
            raise fail(error_message(reply.content, reply.status_code))
        return reply.json()


def error_message(content: bytes, status: int) -> str:
    try:
        error = json.loads(content)["error"]
        return f"{error['message']} ({error.get('code') or status})"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {status}: {content[:200].decode(errors='replace')}"


def documents_in(paths: list[Path]) -> list[Path]:
    """The files named, and the readable documents inside the folders named."""
    found = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*")
                            if p.is_file() and p.suffix.lower() in ACCEPTED)
        elif path.is_file():
            found.append(path)
        else:
            raise fail(f"{path}: no such file or folder")
    return found


def _upload(gateway: Gateway, path: Path, collection: str, progress: Progress) -> str | None:
    """One document, its indexing drawn as a bar; returns the error, if any."""
    import httpx

    task = progress.add_task(path.name, total=None)
    try:
        with path.open("rb") as handle, gateway.http.stream(
                "POST", "/v1/kb/documents", files={"file": (path.name, handle)},
                data={"collection": collection},
                headers={"Accept": "application/x-ndjson"}) as reply:
            if reply.status_code >= 400:
                return error_message(reply.read(), reply.status_code)
            if not reply.headers.get("content-type", "").startswith("application/x-ndjson"):
                document = json.loads(reply.read())  # a duplicate: nothing was indexed
                progress.update(task, total=1, completed=1,
                                description=f"{path.name} (already there: {document['id']})")
                return None
            for line in reply.iter_lines():
                event = json.loads(line)
                if event["event"] == "chunked":
                    progress.update(task, total=event["chunks"])
                elif event["event"] == "embedded":
                    progress.update(task, completed=event["done"])
                elif event["event"] == "error":
                    return f"{event['error']['message']} ({event['error'].get('code')})"
                elif event["event"] == "done":
                    document = event["document"]
                    progress.update(task, description=f"{path.name} -> {document['id']}",
                                    completed=document["chunks"], total=document["chunks"])
    except OSError as exc:
        return f"cannot read it: {exc}"
    except httpx.TransportError as exc:
        return f"the gateway at {gateway.url} does not answer ({exc})"
    return None


@kb_app.command("add")
def kb_add(paths: Annotated[list[Path], typer.Argument(help="Documents, or folders of them.")],
           collection: Annotated[str, typer.Option(help="Collection to add them to.")
                                 ] = "default",
           config: ConfigOption = None) -> None:
    """Index documents (txt, md, html, pdf, docx): extracted, chunked, embedded."""
    settings = load_settings(config)
    files = documents_in(paths)
    if not files:
        raise fail("no documents to add (accepted: " + ", ".join(ACCEPTED) + ")")
    failed: list[tuple[Path, str]] = []
    with Gateway(settings) as gateway, Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("chunks"), console=console) as progress:
        for path in files:
            error = _upload(gateway, path, collection, progress)
            if error is not None:
                failed.append((path, error))
                progress.update(progress.task_ids[-1], description=f"{path.name}: refused",
                                total=1, completed=0)
    for path, error in failed:
        err_console.print(f"[red]error:[/red] {escape(str(path))}: {escape(error)}",
                          highlight=False)
    if failed:
        raise typer.Exit(2)


@kb_app.command("list")
def kb_list(collection: Annotated[str | None, typer.Option(help="Only this collection.")
                                  ] = None,
            as_json: Annotated[bool, typer.Option("--json")] = False,
            config: ConfigOption = None) -> None:
    """The documents in the knowledge base."""
    with Gateway(load_settings(config)) as gateway:
        params = {"collection": collection} if collection else {}
        documents = gateway.call("GET", "/v1/kb/documents", params=params)["documents"]
    if as_json:
        print(json.dumps(documents, indent=2, ensure_ascii=False))
        return
    table = Table(title="Knowledge base")
    table.add_column("id", no_wrap=True)
    for column in ("collection", "name", "kind", "size", "chunks", "added"):
        table.add_column(column)
    for d in documents:
        table.add_row(d["id"], d["collection"], escape(d["name"]), d["kind"],
                      f"{d['size'] / 1024:.1f} KiB", str(d["chunks"]),
                      time.strftime("%Y-%m-%d %H:%M", time.localtime(d["added"])))
    console.print(table)


@kb_app.command("remove")
def kb_remove(document_id: Annotated[str, typer.Argument(help="The document's id.")],
              config: ConfigOption = None) -> None:
    """Take a document out of the knowledge base (its chunks and vectors go too)."""
    with Gateway(load_settings(config)) as gateway:
        removed = gateway.call("DELETE", f"/v1/kb/documents/{document_id}")["removed"]
    console.print(f"removed {removed['id']} ({escape(removed['name'])}, "
                  f"{removed['chunks']} chunks) from {removed['collection']}")


@kb_app.command("search")
def kb_search(query: Annotated[str, typer.Argument(help="What to look for.")],
              k: Annotated[int, typer.Option("--k", help="How many passages.")] = 5,
              collection: Annotated[str | None, typer.Option(help="Only this collection.")
                                    ] = None,
              as_json: Annotated[bool, typer.Option("--json")] = False,
              config: ConfigOption = None) -> None:
    """The passages the assistant would find for a question."""
    body: dict[str, Any] = {"query": query, "k": k}
    if collection:
        body["collection"] = collection
    with Gateway(load_settings(config)) as gateway:
        results = gateway.call("POST", "/v1/kb/search", json=body)["results"]
    if as_json:
        print(json.dumps(results, indent=2, ensure_ascii=False))
        return
    if not results:
        console.print("nothing found")
    for n, r in enumerate(results, 1):
        console.print(f"[bold]{n}. {escape(r['name'])}[/bold] chunk {r['chunk']} "
                      f"(score {r['score']:.2f}, similarity {r['similarity']:.2f}"
                      f"{', keywords' if r['keyword'] else ''})")
        console.print(escape(r["text"]), highlight=False)
        console.print()


@kb_app.command("bind")
def kb_bind(collections: Annotated[list[str] | None, typer.Argument(
                help="Collections to retrieve from; none to go back to the default.")] = None,
            conversation: Annotated[str | None, typer.Option(help="A conversation id.")] = None,
            integration: Annotated[str | None, typer.Option(help="An integration's name.")
                                   ] = None,
            config: ConfigOption = None) -> None:
    """Choose the collections a conversation or an integration answers from."""
    if (conversation is None) == (integration is None):
        raise fail("name exactly one of --conversation and --integration")
    kind, name = ("conversations", conversation) if conversation else \
        ("integrations", integration)
    with Gateway(load_settings(config)) as gateway:
        if collections:
            gateway.call("PUT", f"/v1/kb/bindings/{kind}/{name}",
                         json={"collections": collections})
            console.print(f"{kind[:-1]} {escape(str(name))} answers from "
                          f"{', '.join(collections)}")
        else:
            gateway.call("DELETE", f"/v1/kb/bindings/{kind}/{name}")
            console.print(f"{kind[:-1]} {escape(str(name))} answers from the default "
                          "collections (kb.default_collections)")


@kb_app.command("reindex")
def kb_reindex(config: ConfigOption = None) -> None:
    """Embed again, from the stored text, every chunk without a vector of the current
    embedding model (after changing kb.embedding_model)."""
    with Gateway(load_settings(config)) as gateway, console.status("re-embedding"):
        done = gateway.call("POST", "/v1/kb/reindex")["reembedded"]
    console.print(f"re-embedded {done} chunks")
