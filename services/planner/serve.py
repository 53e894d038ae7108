"""Run the planner under uvicorn with an embedded Redis unless one is configured."""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path

from services.common.redis_server import EmbeddedRedis
from services.common.settings import setup_process
from services.planner.settings import PlannerSettings


def _graceful_server(config):
    """A uvicorn server that treats SIGTERM/SIGINT as a graceful stop and then exits 0.

    (uvicorn re-raises the captured signal after shutting down, which ends the process with
    status -15 even though nothing went wrong; supervisors read that as a crash.)
    """
    import uvicorn

    class GracefulServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGTERM, signal.SIGINT)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return GracefulServer(config)


def run_planner(settings: PlannerSettings) -> None:
    """Blocking; SIGTERM/SIGINT finish in-flight requests, close the backends, then exit 0."""
    import uvicorn

    from services.planner.app import create_app

    shared = setup_process()
    url = shared.redis_for(settings.redis_url)
    embedded = None
    if settings.cache_enabled and not url:
        embedded = EmbeddedRedis(Path(settings.state_dir) / "redis").start()
        url = embedded.url
    try:
        config = uvicorn.Config(create_app(settings, redis_url=url), host=settings.host,
                                port=settings.port, log_level="info", timeout_graceful_shutdown=10)
        _graceful_server(config).run()
    finally:
        if embedded is not None:
            embedded.stop()
