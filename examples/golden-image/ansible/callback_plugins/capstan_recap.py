# capstan_recap — writes the play recap as JSON, for Capstan's ansible stage.
#
# ansible-core (2.14 here) ships no JSON callback (`ANSIBLE_STDOUT_CALLBACK=json` is
# "ERROR! Invalid callback for stdout specified: json"; json/jsonl live in the ansible.posix
# collection), and the minimal/oneline callbacks print no recap at all. This notification callback
# leaves the default screen output alone and writes one JSON file at the end of the run:
#
#   {"hosts": {"web-1": {"ok": 9, "changed": 0, "unreachable": 0, "failed": 0, "skipped": 1,
#                        "rescued": 0, "ignored": 0}, ...},
#    "failures": [{"host": "web-1", "task": "...", "msg": "...", "unreachable": false}, ...]}
#
# Enable it with environment variables only:
#   ANSIBLE_CALLBACK_PLUGINS=<this directory> ANSIBLE_CALLBACKS_ENABLED=capstan_recap
#   CAPSTAN_ANSIBLE_RECAP=<file to write>
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = """
name: capstan_recap
type: notification
short_description: write the play recap (per-host stats and failures) as JSON
description:
  - Writes per-host ok/changed/unreachable/failed/skipped/rescued/ignored counts and the failed or
    unreachable tasks' messages to a JSON file when the playbook ends.
options:
  path:
    description: File to write.
    env:
      - name: CAPSTAN_ANSIBLE_RECAP
    required: true
    type: path
"""

import json
import os

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "capstan_recap"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super(CallbackModule, self).__init__(*args, **kwargs)
        self._failures = []

    def _record(self, result, unreachable):
        res = result._result or {}
        msg = res.get("msg") or res.get("stderr") or res.get("module_stderr") or ""
        self._failures.append(
            {
                "host": result._host.get_name(),
                "task": result._task.get_name(),
                "msg": str(msg),
                "unreachable": unreachable,
            }
        )

    def v2_runner_on_failed(self, result, ignore_errors=False):
        if not ignore_errors:
            self._record(result, False)

    def v2_runner_on_unreachable(self, result):
        self._record(result, True)

    def v2_playbook_on_stats(self, stats):
        hosts = {}
        for host in sorted(stats.processed.keys()):
            s = stats.summarize(host)
            hosts[host] = {
                "ok": s["ok"],
                "changed": s["changed"],
                "unreachable": s["unreachable"],
                "failed": s["failures"],
                "skipped": s["skipped"],
                "rescued": s["rescued"],
                "ignored": s["ignored"],
            }
        path = self.get_option("path")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"hosts": hosts, "failures": self._failures}, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
