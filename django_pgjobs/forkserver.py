"""Preloaded by the fork server of isolated jobs (isolation.py): Django is set up
there once, so that each child it forks starts ready."""

import importlib.util
import os

from django.apps import apps

from django_pgjobs.stopsignals import ignore_stop_signals

_settings = os.environ.get("DJANGO_SETTINGS_MODULE", "")
# Found from here, the fork server's directory (the worker's): else each child
# sets Django up itself, from the worker's sys.path, which it is handed.
if _settings and not apps.ready and importlib.util.find_spec(_settings.split(".")[0]):
    import contextlib

    import django

    with contextlib.suppress(Exception):  # each child tries again, and reports it
        django.setup()

# Ctrl-C, a hangup or systemd's KillMode=control-group reach this process too: it
# lives as long as its worker (it ends when the worker does), and its children, the
# jobs' processes, inherit this.
ignore_stop_signals()
