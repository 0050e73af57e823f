"""``appliance messages``: a message and its history, from the durable store."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.markup import escape

from appliance.cli.common import ConfigOption, console, err_console, load

messages_app = typer.Typer(no_args_is_help=True, help="Messages in the durable store.")


@messages_app.command("show")
def messages_show(message_id: Annotated[str, typer.Argument(help="The sender's message id.")],
                  conversation: Annotated[str | None, typer.Option(
                      "--conversation", help="Needed when several conversations use the id."
                  )] = None,
                  config: ConfigOption = None,
                  as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """A message's text, reply, state and every state change, from the database."""
    from appliance.store.db import connect, open_cipher
    from appliance.store.messages import MessageStore
    from appliance.store.summaries import SummaryStore

    settings = load(config).settings
    if not settings.paths.database.exists():
        err_console.print(f"[red]error:[/red] no database at {settings.paths.database}")
        raise typer.Exit(2)
    store = MessageStore(connect(settings.paths.database), open_cipher(settings))
    summaries = SummaryStore(store.db, store.cipher)
    records = [r for r in store.find(message_id)
               if conversation is None or r.conversation == conversation]
    if not records:
        err_console.print(f"[red]error:[/red] no message {escape(message_id)!r}"
                          + (f" in conversation {escape(conversation)!r}" if conversation else ""))
        raise typer.Exit(2)
    found: list[dict[str, Any]] = []
    for r in records:
        summary = summaries.get(r.conversation)
        found.append({"message": r.to_json(),
                      "transitions": store.transitions(r.conversation, r.id),
                      "summary": None if summary is None else {
                          "text": summary.text, "upto_seq": summary.upto_seq,
                          "updated": summary.updated}})
    if as_json:
        print(json.dumps(found, indent=2))
        return
    for item in found:
        message = item["message"]
        console.print(f"[bold]{message['conversation']} #{message['seq']}[/bold] "
                      f"id {message['id']} via {message['channel']} from {message['sender']}: "
                      f"[cyan]{message['state']}[/cyan]", highlight=False)
        console.print(f"  text:  {escape(message['text'])}", highlight=False)
        console.print(f"  reply: {escape(str(message['reply'] or message['error'] or '-'))}",
                      highlight=False)
        for source in message["sources"]:
            console.print(f"  source: document {source['document']} chunk {source['chunk']} "
                          f"(score {source['score']})", highlight=False)
        if item["summary"] is not None:
            console.print(f"  conversation summary (turns to #{item['summary']['upto_seq']}): "
                          f"{escape(item['summary']['text'])}", highlight=False)
        for step in item["transitions"]:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(step["at"]))
            console.print(f"  {stamp}  {step['state']:<10} {escape(step['note'])}",
                          highlight=False)


