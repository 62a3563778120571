"""The master's settings: settings.yaml when it exists, else the defaults.

Nothing here reads a secret when the file is absent: a worker without
settings gets a throwaway password, so `buildbot checkconfig` passes with
no settings file at all.
"""

import os

import yaml

DEFAULTS = {
    "bind_address": "127.0.0.1",
    "web_port": 9011,
    "worker_port": 9021,
    "db_url": "sqlite:///state.sqlite",
    "workers": {},
}


class Settings:
    def __init__(self, values):
        self._values = {**DEFAULTS, **(values or {})}

    @classmethod
    def load(cls, path):
        if not os.path.exists(path):
            return cls({})
        with open(path, encoding="utf-8") as f:
            return cls(yaml.safe_load(f))

    def __getattr__(self, key):
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(key) from None

    def worker(self, name):
        """The settings of one worker: a dict, empty when it has none."""
        return dict((self._values.get("workers") or {}).get(name) or {})
