# Written into the stage work dir by Capstan's ansible plugin (capstan-ansible).
#
# An aggregate callback: it leaves the screen output to the stdout callback
# and writes, at the end of the run, one JSON document with what the plugin
# turns into stage outputs -- the per-host stats Ansible keeps itself (the
# numbers of the PLAY RECAP), every failed or unreachable task (host, task,
# message) and, for the plugin's `setup` run, the facts:
#
#   {"version": 1,
#    "hosts": {"web-1": {"ok": 9, "changed": 0, "failed": 0, "unreachable": 0,
#                        "skipped": 1, "rescued": 0, "ignored": 0}},
#    "failures": [{"host": "web-2", "task": "...", "msg": "...", "unreachable": false}],
#    "facts": {"web-1": {"ansible_distribution": "Debian"}}}
#
# (`hosts` and `failures` have the same shape as the golden-image example's
# capstan_recap callback.) Reading Ansible's own counters is more reliable
# than parsing the PLAY RECAP text, whose layout depends on the stdout
# callback.
from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = '''
    name: capstan_results
    type: aggregate
    short_description: Write per-host results as JSON for Capstan
    description:
      - Writes per-host stats, failures and facts to a JSON file at the end of the run.
    options:
      results_file:
        description: Where to write the JSON document.
        env:
          - name: ANSIBLE_CAPSTAN_RESULTS
        type: path
'''

import json
import os

from ansible.plugins.callback import CallbackBase

MAX_MESSAGE = 2000


def _text(value):
    if value is None:
        return ''
    if isinstance(value, (list, tuple)):
        value = '\n'.join(str(v) for v in value)
    return str(value).strip()


def _message(res):
    """The most useful one-line-ish reason from a module result."""
    msg = _text(res.get('msg'))
    if not msg or msg.startswith('One or more items failed') or msg == 'All items completed':
        for item in res.get('results') or []:
            if isinstance(item, dict) and (item.get('failed') or item.get('unreachable')):
                inner = _message(item)
                if inner:
                    msg = inner
                    break
    detail = _text(res.get('stderr')) or _text(res.get('module_stderr'))
    if detail and detail not in msg:
        msg = (msg + ': ' + detail) if msg else detail
    if not msg:
        msg = _text(res.get('stdout')) or _text(res.get('module_stdout'))
    if not msg and res.get('rc') is not None:
        msg = 'exit status %s' % res.get('rc')
    if len(msg) > MAX_MESSAGE:
        msg = msg[:MAX_MESSAGE] + '...'
    return msg


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'capstan_results'
    CALLBACK_NEEDS_ENABLED = True
    CALLBACK_NEEDS_WHITELIST = True

    def __init__(self, *args, **kwargs):
        super(CallbackModule, self).__init__(*args, **kwargs)
        self._failures = []
        self._facts = {}
        # Facts are kept only for the plugin's `setup` run: a playbook that
        # gathers facts would otherwise fill the file with every fact.
        self._want_facts = os.environ.get('ANSIBLE_CAPSTAN_FACTS') == '1'

    def _failure(self, result, unreachable):
        self._failures.append({
            'host': result._host.get_name(),
            'task': result._task.get_name(),
            'msg': _message(result._result or {}),
            'unreachable': unreachable,
        })

    def v2_runner_on_failed(self, result, ignore_errors=False):
        if not ignore_errors:
            self._failure(result, False)

    def v2_runner_on_unreachable(self, result):
        self._failure(result, True)

    def v2_runner_on_ok(self, result):
        if not self._want_facts:
            return
        facts = result._result.get('ansible_facts')
        if isinstance(facts, dict) and result._task.action in (
                'setup', 'ansible.builtin.setup', 'ansible.legacy.setup', 'gather_facts',
                'ansible.builtin.gather_facts'):
            self._facts.setdefault(result._host.get_name(), {}).update(facts)

    def v2_playbook_on_stats(self, stats):
        path = os.environ.get('ANSIBLE_CAPSTAN_RESULTS')
        if not path:
            self._display.warning('capstan_results: ANSIBLE_CAPSTAN_RESULTS is not set')
            return
        hosts = {}
        for host in sorted(stats.processed.keys()):
            s = stats.summarize(host)
            hosts[host] = {
                'ok': s.get('ok', 0),
                'changed': s.get('changed', 0),
                'failed': s.get('failures', 0),
                'unreachable': s.get('unreachable', 0),
                'skipped': s.get('skipped', 0),
                'rescued': s.get('rescued', 0),
                'ignored': s.get('ignored', 0),
            }
        doc = {
            'version': 1,
            'hosts': hosts,
            'failures': self._failures,
            'facts': self._facts,
        }
        tmp = path + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(doc, f, indent=1, sort_keys=True, default=str)
        os.replace(tmp, path)
