"""`provatar db upgrade|status`: the database schema, kept by the migrations in service/migrations.

`provatar init` and every start of the API run the same upgrade; this command is for operators who upgrade the
schema as its own deployment step (one process, before the new release's API servers and workers start)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from service.cli import actor, app, emit, err, guarded, out

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from service.migrations import UpgradeResult
    from service.settings import Settings

db_app = typer.Typer(no_args_is_help=True, help="Database schema: upgrade (migrations) and status.")
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Create or upgrade the schema to this release's (idempotent); adopts a database made before migrations."""

    def body() -> None:
        from service import migrations
        from service.db import make_engine
        from service.settings import get_settings

        settings = get_settings()
        if settings.database_url is None:  # the default SQLite file lives in the data dir
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(settings.db_url)
        try:
            result = migrations.upgrade(engine)
            diff = migrations.schema_diff(engine) if result.adopted else []
            if result.changed:
                _audit(settings, engine, result)
        finally:
            engine.dispose()
        data: dict[str, Any] = {
            "database": engine.url.render_as_string(hide_password=True),
            "before": result.before,
            "after": result.after,
            "adopted": result.adopted,
            "differences": [str(d) for d in diff],
        }
        if as_json:
            emit(data, True)
        else:
            out.print(f"database: {data['database']}")
            if result.adopted:
                out.print(f"recognised a database made before migrations as revision {result.adopted}; stamped it")
            if result.changed:
                out.print(f"upgraded: {result.before or 'empty'} -> {result.after}")
            else:
                out.print(f"already at {result.after}: nothing to do")
        if diff:
            err.print(f"the adopted schema still differs from the models in {len(diff)} places:")
            for d in diff:
                err.print(f"  {d}")
            raise typer.Exit(1)

    guarded(body)


@db_app.command("status")
def db_status(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The database's revision, this release's head, and any difference between the models and the schema.
    Exit 0 when the schema is at head and matches the models, 1 otherwise."""

    def body() -> None:
        from service import migrations
        from service.db import make_engine
        from service.settings import get_settings

        engine = make_engine(get_settings().db_url)
        try:
            current = migrations.current_revision(engine)
            head = migrations.head_revision()
            diff = migrations.schema_diff(engine) if current == head else []
        finally:
            engine.dispose()
        data = {"current": current, "head": head, "differences": [str(d) for d in diff]}
        if as_json:
            emit(data, True)
        else:
            out.print(f"current: {current or 'none (empty, or made before migrations)'}\nhead:    {head}")
            for d in diff:
                out.print(f"differs: {d}")
        if current != head or diff:
            if not as_json:
                hint = "run `provatar db upgrade`" if current != head else "the schema differs from the models"
                err.print(f"hint: {hint}")
            raise typer.Exit(1)

    guarded(body)


def _audit(settings: Settings, engine: Engine, result: UpgradeResult) -> None:
    """Record the upgrade in the audit log when this data dir is an initialised installation (keys present)."""
    from service.keys import SERVICE_SECRET
    from service.runtime import Runtime

    if not (settings.keys_dir / SERVICE_SECRET).exists():
        return
    rt = Runtime(settings, engine=engine)
    rt.audit.append(
        action="database.upgraded",
        actor=actor(),
        outcome="ok",
        details={"before": result.before, "after": result.after, "adopted": result.adopted},
    )


@db_app.command("revision")
def db_revision(message: Annotated[str, typer.Option("--message", "-m", help="Why the schema changes.")]) -> None:
    """(Developers, in a checkout) Write the next migration from the models' difference to the migrated schema."""

    def body() -> None:
        from service import migrations

        path = migrations.new_revision(message)
        out.print(f"wrote {path}; review it (PostgreSQL enum values need op.execute) and run the migration tests")

    guarded(body)
