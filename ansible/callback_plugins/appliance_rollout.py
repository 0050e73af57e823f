# Copyright: the edge-appliance authors. Apache-2.0.
"""Callback: the rollout summary, printed and written as JSON even when the rollout stopped.

A play that sets ``appliance_rollout_summary: true`` gets a line per host of its inventory
pattern: the outcome its tasks recorded with ``set_stats`` (key ``appliance_rollout``), or,
for a host that recorded none, ``failed``/``unreachable`` from the run's statistics, or
``not reached`` when the rollout stopped before its batch. A summary play at the end of the
playbook would not run once max_fail_percentage aborts, which is when it matters most.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ansible.plugins.callback import CallbackBase

FAILURES = ("rolled_back", "rollback_failed", "failed", "unreachable")

DOCUMENTATION = r"""
name: appliance_rollout
type: aggregate
short_description: Rollout summary (upgraded, rolled back, left alone, not reached)
description:
  - Prints a table of every host of a play with C(appliance_rollout_summary=true) and writes
    it as JSON to C($APPLIANCE_ROLLOUT_REPORT), default C(reports/rollout-summary.json) beside
    the playbook.
requirements:
  - enabled in ansible.cfg (callbacks_enabled)
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "appliance_rollout"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self._hosts: list[str] = []
        self._basedir = Path.cwd()
        self._started = time.time()

    def v2_playbook_on_start(self, playbook) -> None:
        self._basedir = Path(playbook._basedir)

    def v2_playbook_on_play_start(self, play) -> None:
        if not play.vars.get("appliance_rollout_summary"):
            return
        inventory = play.get_variable_manager()._inventory
        # every host of the pattern, not only the current serial batch
        for host in inventory.get_hosts(play.hosts, ignore_restrictions=True):
            if host.name not in self._hosts:
                self._hosts.append(host.name)

    def v2_playbook_on_stats(self, stats) -> None:
        if not self._hosts:
            return
        rows = []
        for name in self._hosts:
            recorded = stats.custom.get(name, {}).get("appliance_rollout")
            summary = stats.summarize(name)
            if recorded:
                row = dict(recorded)
            elif summary["unreachable"]:
                row = {"outcome": "unreachable", "reason": "lost during the rollout"}
            elif summary["failures"]:
                row = {"outcome": "failed", "reason": "failed and not rolled back"}
            elif name in stats.processed:
                row = {"outcome": "failed", "reason": "stopped before an outcome"}
            else:
                row = {"outcome": "not_reached", "reason": "the rollout stopped first"}
            rows.append({"host": name, "outcome": row.get("outcome", "?"),
                         "version": row.get("version", ""), "reason": row.get("reason", "")})
        counts: dict[str, int] = {}
        for row in rows:
            counts[row["outcome"]] = counts.get(row["outcome"], 0) + 1
        # stopped: a box failed (rolled back or worse), so later batches were not run
        stopped = any(row["outcome"] in (*FAILURES, "not_reached") for row in rows)
        self._display.banner("ROLLOUT SUMMARY")
        for row in rows:
            self._display.display(f"{row['host']:<28} {row['outcome']:<12} "
                                  f"{row['version']:<10} {row['reason']}")
        verdict = ("rollout STOPPED: " if stopped else "rollout complete: ") + ", ".join(
            f"{count} {outcome}" for outcome, count in sorted(counts.items()))
        self._display.display(verdict)
        target = Path(os.environ.get("APPLIANCE_ROLLOUT_REPORT")
                      or self._basedir / "reports" / "rollout-summary.json")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps({"started": int(self._started), "ended": int(time.time()),
                                      "stopped": stopped, "counts": counts, "hosts": rows},
                                     indent=2) + "\n")
        self._display.display(f"summary written to {target}")
