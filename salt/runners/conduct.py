# -*- coding: utf-8 -*-
"""
Keep ``salt-run conduct.group ...`` working on a Salt master after moving to
the ``conductor`` binary.

Drop this file into a directory listed in the master's ``runner_dirs`` and
call it exactly as the old runner::

    salt-run conduct.group create group=devops system=small_test pillarenv=test region=us-east-1a
    salt-run conduct.group plan group=devops role=activemq count=2 pillarenv=test region=us-east-1a
    salt-run conduct.group destroy group=devops pillarenv=test region=us-east-1a cpid=16833830331552303186

The words are passed unchanged to ``conductor group <action> ... --json`` and
its JSON document is returned. A failed run adds ``error`` (conductor's
message) and ``retcode`` (conductor's exit code), which ``salt-run`` turns into
its own exit code.

Master options (all optional):

``conductor_binary``
    Path of the binary (default: ``conductor`` on PATH).
``conductor_args``
    Extra flags for every call, e.g. ``[--pillar-dir, /srv/pillar, --provisioner, ec2]``.

Keyword arguments ``dry_run=True``, ``provisioner=ec2`` and ``no_salt=True``
become the flags of the same name. ``destroy`` always gets ``--yes``: the
runner has no terminal to ask on (``dry_run=True`` lists what it would
destroy).
"""
from __future__ import absolute_import

import json
import subprocess

__virtualname__ = "conduct"

# Keyword arguments that are conductor flags rather than words.
_FLAGS = {"dry_run": "--dry-run", "no_salt": "--no-salt"}
_VALUE_FLAGS = {"provisioner": "--provisioner"}


def __virtual__():
    return __virtualname__


def _truthy(value):
    return str(value).lower() in ("1", "true", "yes", "on")


def group(action, **kwargs):
    """
    Run ``conductor group <action>`` with the given ``key=value`` words.

    CLI Example:

    .. code-block:: bash

        salt-run conduct.group create group=devops system=small_test pillarenv=test region=us-east-1a
    """
    opts = globals().get("__opts__", {})
    binary = opts.get("conductor_binary", "conductor")
    cmd = [binary, "group", str(action)]
    flags = []
    for key in sorted(kwargs):
        if key.startswith("__"):
            continue  # Salt's own __pub_* arguments
        value = kwargs[key]
        if key in _FLAGS:
            if _truthy(value):
                flags.append(_FLAGS[key])
        elif key in _VALUE_FLAGS:
            flags.extend([_VALUE_FLAGS[key], str(value)])
        else:
            cmd.append("{0}={1}".format(key, value))
    cmd.append("--json")
    if str(action) == "destroy":
        flags.append("--yes")  # no terminal to confirm on; dry_run=True lists first
    cmd.extend(flags)
    cmd.extend(str(a) for a in opts.get("conductor_args", []))
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    except OSError as exc:
        return {"error": "cannot run {0}: {1}; set conductor_binary in the master config".format(binary, exc),
                "retcode": 4}
    ret = {}
    if proc.stdout.strip():
        try:
            ret = json.loads(proc.stdout)
        except ValueError:
            ret = {"output": proc.stdout}
    if proc.returncode != 0:
        if not isinstance(ret, dict):
            ret = {"output": ret}
        if not ret.get("error"):
            ret["error"] = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "conductor failed"
        ret["retcode"] = proc.returncode
    return ret
