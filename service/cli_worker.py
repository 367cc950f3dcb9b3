"""`provatar worker`: a Celery worker that runs generation jobs from PROVATAR_BROKER_URL.

Run as many as the machines allow, each against the same database (PROVATAR_DATABASE_URL), broker and data dir
keys as the API (see the README's Deployment section). torch and the face models load in each worker process on
its first job, not here.
"""

from __future__ import annotations

from typing import Annotated

import typer

from service.cli import app, guarded


@app.command()
def worker(
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Jobs run at once (prefork processes).")] = 1,
    loglevel: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run generation jobs from the broker (PROVATAR_BROKER_URL) until stopped (Ctrl-C / SIGTERM: warm shutdown)."""

    def body() -> None:
        from service.errors import InvalidInput
        from service.runtime import Runtime
        from service.settings import get_settings

        if loglevel.lower() not in ("debug", "info", "warning", "error"):
            raise InvalidInput(f"--loglevel must be debug, info, warning or error, not {loglevel!r}")
        settings = get_settings()
        if not settings.broker_url:
            raise InvalidInput(
                "provatar worker needs a broker: set PROVATAR_BROKER_URL (e.g. redis://127.0.0.1:6379/1)",
                code="broker_not_configured",
            )
        # Fail here, once, if the installation is missing or its schema cannot be brought up to date (this also
        # runs the migrations before any child starts), rather than in every child process.
        Runtime(settings).close()
        from service.tasks import create_celery, prepare_worker, worker_argv

        celery = create_celery(settings)
        prepare_worker(celery)
        celery.worker_main(worker_argv(concurrency=concurrency, loglevel=loglevel.upper()))

    guarded(body)
