"""``appliance <verb>``: everything a person does on a box. The Makefile calls this.

One module per verb group; :mod:`appliance.cli.common` holds what they share."""

from __future__ import annotations

import typer

from appliance.cli.audit import audit_app
from appliance.cli.bench import bench_app
from appliance.cli.configuration import config_app
from appliance.cli.doctor import doctor_app
from appliance.cli.im import im_app
from appliance.cli.kb import kb_app
from appliance.cli.messages import messages_app
from appliance.cli.models import models_app
from appliance.cli.people import people_app
from appliance.cli.plugins import plugins_app
from appliance.cli.run import run_app
from appliance.cli.security import certs_app, keys_app, token_app, webhook_app
from appliance.cli.service import service_app
from appliance.cli.skills import skills_app
from appliance.cli.update import update_app

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Edge AI appliance: local LLM, OpenAI-compatible gateway, ops tools.")
for verbs in (run_app, doctor_app):  # top-level verbs: up, selfheal, engine, ..., doctor
    app.registered_commands.extend(verbs.registered_commands)
for group, name in ((models_app, "models"), (config_app, "config"), (bench_app, "bench"),
                    (messages_app, "messages"), (certs_app, "certs"), (token_app, "token"),
                    (keys_app, "keys"), (webhook_app, "webhook"), (update_app, "update"),
                    (service_app, "service"), (kb_app, "kb"), (im_app, "im"),
                    (people_app, "people"), (skills_app, "skills"),
                    (plugins_app, "plugins"), (audit_app, "audit")):
    app.add_typer(group, name=name)


def main() -> None:
    app()
