"""``appliance im``: instant-messaging integrations (which platform account an endpoint
``/v1/im/<platform>/<name>`` speaks for), stored in the box's database with their secrets
sealed. Secrets are read from files (``--*-file``), never from the command line, where ``ps``
and shell history would keep them."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from appliance.cli.common import ConfigOption, console, fail, load_settings
from appliance.config import Settings

im_app = typer.Typer(no_args_is_help=True, help="Instant-messaging platforms (WeCom, "
                     "DingTalk, Feishu, Telegram, Slack).")
add_app = typer.Typer(no_args_is_help=True, help="Connect a platform account.")
im_app.add_typer(add_app, name="add")

ApiBase = Annotated[str | None, typer.Option(help="The platform's API base URL (default: "
                                             "the [im] setting).")]


def store(settings: Settings) -> Any:
    from appliance.store.db import connect, open_cipher
    from appliance.store.im_integrations import ImIntegrations

    return ImIntegrations(connect(settings.paths.database, settings.store.synchronous),
                          open_cipher(settings))


def secret(path: Path, what: str) -> str:
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise fail(f"cannot read the {what} from {path}: {exc}") from None
    if not value:
        raise fail(f"{path} is empty; it should hold the {what}")
    return value


def save(settings: Settings, platform: str, name: str, config: dict[str, Any]) -> None:
    from appliance.store.im_integrations import BadIntegration

    try:
        store(settings).add(name, platform, {k: v for k, v in config.items() if v is not None})
    except BadIntegration as exc:
        raise fail(str(exc)) from None
    console.print(f"{platform} integration [bold]{escape(name)}[/bold] added; give the "
                  f"platform this URL: https://<box>:{settings.http.port}/v1/im/{platform}/{name}")


@add_app.command("telegram")
def add_telegram(name: Annotated[str, typer.Argument(help="Integration name (in the URL).")],
                 bot_token_file: Annotated[Path, typer.Option(help="File holding the bot "
                                                              "token from @BotFather.")],
                 secret_token_file: Annotated[Path, typer.Option(
                     help="File holding the secret_token given to setWebhook.")],
                 api_base: ApiBase = None, config: ConfigOption = None) -> None:
    """A Telegram bot (webhook mode)."""
    save(load_settings(config), "telegram", name, {
        "bot_token": secret(bot_token_file, "bot token"),
        "secret_token": secret(secret_token_file, "secret token"), "api_base": api_base})


@add_app.command("wecom")
def add_wecom(name: Annotated[str, typer.Argument(help="Integration name (in the URL).")],
              corp_id: Annotated[str, typer.Option(help="The corp id (我的企业 → 企业ID).")],
              agent_id: Annotated[int, typer.Option(help="The self-built app's AgentId.")],
              secret_file: Annotated[Path, typer.Option(help="File holding the app's "
                                                        "Secret.")],
              token_file: Annotated[Path, typer.Option(
                  help="File holding the Token of the app's 接收消息 API settings.")],
              aes_key_file: Annotated[Path, typer.Option(
                  help="File holding the EncodingAESKey of the same settings.")],
              api_base: ApiBase = None, config: ConfigOption = None) -> None:
    """A WeCom (企业微信) self-built app, receiving messages by callback."""
    from appliance.gateway.im.wecom_crypto import WeComCryptoError, aes_key

    key = secret(aes_key_file, "EncodingAESKey")
    try:
        aes_key(key)
    except WeComCryptoError as exc:
        raise fail(f"{aes_key_file}: {exc}") from None
    save(load_settings(config), "wecom", name, {
        "corp_id": corp_id, "agent_id": agent_id, "secret": secret(secret_file, "app Secret"),
        "token": secret(token_file, "Token"), "encoding_aes_key": key, "api_base": api_base})


@add_app.command("dingtalk")
def add_dingtalk(name: Annotated[str, typer.Argument(help="Integration name (in the URL).")],
                 app_key: Annotated[str, typer.Option(help="The robot app's AppKey "
                                                      "(Client ID).")],
                 app_secret_file: Annotated[Path, typer.Option(
                     help="File holding the app's AppSecret (Client Secret).")],
                 robot_code: Annotated[str, typer.Option(help="The robot's RobotCode.")],
                 api_base: ApiBase = None, config: ConfigOption = None) -> None:
    """A DingTalk internal-app robot (message receiving in HTTP mode)."""
    save(load_settings(config), "dingtalk", name, {
        "app_key": app_key, "app_secret": secret(app_secret_file, "app secret"),
        "robot_code": robot_code, "api_base": api_base})


@add_app.command("feishu")
def add_feishu(name: Annotated[str, typer.Argument(help="Integration name (in the URL).")],
               app_id: Annotated[str, typer.Option(help="The app's App ID (cli_...).")],
               app_secret_file: Annotated[Path, typer.Option(
                   help="File holding the app's App Secret.")],
               verification_token_file: Annotated[Path, typer.Option(
                   help="File holding the event subscription's Verification Token.")],
               encrypt_key_file: Annotated[Path, typer.Option(
                   help="File holding the event subscription's Encrypt Key.")],
               api_base: ApiBase = None, config: ConfigOption = None) -> None:
    """A Feishu or Lark app bot (events sent to the developer's server; for Lark give
    --api-base https://open.larksuite.com)."""
    save(load_settings(config), "feishu", name, {
        "app_id": app_id, "app_secret": secret(app_secret_file, "app secret"),
        "verification_token": secret(verification_token_file, "verification token"),
        "encrypt_key": secret(encrypt_key_file, "encrypt key"), "api_base": api_base})


@add_app.command("slack")
def add_slack(name: Annotated[str, typer.Argument(help="Integration name (in the URL).")],
              bot_token_file: Annotated[Path, typer.Option(
                  help="File holding the app's Bot User OAuth Token (xoxb-...).")],
              signing_secret_file: Annotated[Path, typer.Option(
                  help="File holding the app's Signing Secret (Basic Information).")],
              api_base: ApiBase = None, config: ConfigOption = None) -> None:
    """A Slack app (Events API request URL; replies with chat.postMessage)."""
    save(load_settings(config), "slack", name, {
        "bot_token": secret(bot_token_file, "bot token"),
        "signing_secret": secret(signing_secret_file, "signing secret"), "api_base": api_base})


@im_app.command("list")
def im_list(as_json: Annotated[bool, typer.Option("--json")] = False,
            config: ConfigOption = None) -> None:
    """The integrations, with their last success and error (secrets not shown)."""
    rows = [i.public() for i in store(load_settings(config)).all()]
    if as_json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    console.print(integrations_table(rows))


def integrations_table(rows: list[dict[str, Any]]) -> Table:
    """Integrations with their last success and error, and (when the rows carry them, as
    ``appliance doctor``'s do) the reply parts waiting and given up."""
    counts = bool(rows) and "pending" in rows[0]
    table = Table("name", "platform", "last success", "last error",
                  *(("waiting", "given up") if counts else ()), title="IM integrations")

    def when(at: float | None) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) if at else "never"

    for row in rows:
        error = f"{when(row['last_error_at'])}: {row['last_error']}" if row["last_error"] \
            else ""
        table.add_row(row["name"], row["platform"], when(row["last_ok"]), escape(error),
                      *((str(row["pending"]), str(row["expired"])) if counts else ()))
    return table


@im_app.command("remove")
def im_remove(name: Annotated[str, typer.Argument(help="Integration name.")],
              config: ConfigOption = None) -> None:
    """Disconnect a platform account (replies still waiting for it are not sent)."""
    if not store(load_settings(config)).remove(name):
        raise fail(f"no integration named {name!r}")
    console.print(f"removed {escape(name)}")


@im_app.command("test")
def im_test(name: Annotated[str, typer.Argument(help="Integration name.")],
            to: Annotated[str, typer.Option(help="Where to send: a chat id, user id or "
                                            "conversation as the platform names it (Slack: a "
                                            "channel id, or channel:thread_ts).")],
            text: Annotated[str, typer.Option(help="What to send.")] = "Test message from "
            "the branch appliance.",
            config: ConfigOption = None) -> None:
    """Send one message through the platform's API now, and say what it answered."""
    import httpx

    from appliance.gateway.im import senders
    from appliance.store.outbox import OutboxItem

    settings = load_settings(config)
    integrations = store(settings)
    found = integrations.get(name)
    if found is None:
        raise fail(f"no integration named {name!r}")

    async def attempt() -> Any:
        async with httpx.AsyncClient(timeout=settings.outbox.timeout_s) as client:
            sender = next(s for s in senders(integrations, settings.im, client)
                          if s.kind == found.platform)
            item = OutboxItem(0, "im-test", "im-test", f"{found.platform}:{name}", 0,
                              {"address": to, "text": text}, 0, time.time())
            return await sender.send(item)

    try:
        delivery = asyncio.run(attempt())
    except httpx.HTTPError as exc:
        raise fail(f"{found.platform} did not answer: {exc}") from None
    if not delivery.ok:
        raise fail(f"{found.platform} refused it: {delivery.detail}")
    console.print(f"sent: {escape(delivery.detail)}")
