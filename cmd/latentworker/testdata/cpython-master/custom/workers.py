"""The fleet's workers, each built by CPythonLikeWorker from its settings."""

import secrets

from buildbot.plugins import worker as _worker

KEEPALIVE = 60


class CPythonLikeWorker:
    def __init__(self, settings, name, tags=None, parallel_builders=1):
        self.name = name
        self.tags = tags or set()
        worker_settings = settings.worker(name)
        # Without settings (CI's checkconfig) a throwaway password.
        pw = worker_settings.get("password", None) or secrets.token_urlsafe(16)
        emails = []
        self.bb_worker = _worker.Worker(
            name,
            str(pw),
            notify_on_missing=emails,
            keepalive_interval=KEEPALIVE,
            max_builds=parallel_builders,
        )


def get_workers(settings):
    return [
        CPythonLikeWorker(settings, name="lab-plain", tags={"linux"}),
        CPythonLikeWorker(settings, name="lw-cli", tags={"linux", "debian", "aws"}),
    ]
