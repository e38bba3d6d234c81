"""Alembic migrations through the dqlite dialect, on the session's real cluster."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa

alembic = pytest.importorskip("alembic")
from alembic import command  # noqa: E402
from alembic.config import Config  # noqa: E402
from alembic.ddl.impl import DefaultImpl  # noqa: E402

from sqlalchemy_dqlite.alembic_impl import DqliteImpl  # noqa: E402

ENV_PY = '''
from alembic import context
from sqlalchemy import create_engine

config = context.config
engine = create_engine(config.get_main_option("sqlalchemy.url"))
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
'''

STEP_1 = '''
"""create account"""
from alembic import op
import sqlalchemy as sa

revision = "0001"
down_revision = None


def upgrade():
    op.create_table(
        "account",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(50), nullable=True),
        sa.Column("active", sa.Boolean, nullable=True),
    )


def downgrade():
    op.drop_table("account")
'''

# SQLite cannot ALTER a column's nullability or type: batch mode copies the table.
STEP_2 = '''
"""email, name required"""
from alembic import op
import sqlalchemy as sa

revision = "0002"
down_revision = "0001"


def upgrade():
    with op.batch_alter_table("account") as batch:
        batch.add_column(sa.Column("email", sa.String(100), nullable=True))
        batch.alter_column("name", existing_type=sa.String(50), type_=sa.String(80), nullable=False)
        batch.create_index("ix_account_email", ["email"], unique=True)


def downgrade():
    with op.batch_alter_table("account") as batch:
        batch.drop_index("ix_account_email")
        batch.alter_column("name", existing_type=sa.String(80), type_=sa.String(50), nullable=True)
        batch.drop_column("email")
'''

# A migration that fails halfway: transactional DDL leaves nothing behind.
STEP_3_BROKEN = '''
"""broken"""
from alembic import op
import sqlalchemy as sa

revision = "0003"
down_revision = "0002"


def upgrade():
    op.create_table("half", sa.Column("id", sa.Integer, primary_key=True))
    op.execute("INSERT INTO no_such_table VALUES (1)")


def downgrade():
    op.drop_table("half")
'''


@pytest.fixture
def migrations(tmp_path: Path, dqlite_cluster, dqlite_database):
    """(alembic Config, engine) for a two-step migration project in tmp_path."""
    hosts = "&".join(f"host={a}" for a in dqlite_cluster.addresses)
    url = f"dqlite:///{dqlite_database}?{hosts}"
    (tmp_path / "versions").mkdir()
    (tmp_path / "env.py").write_text(textwrap.dedent(ENV_PY))
    (tmp_path / "script.py.mako").write_text("")
    (tmp_path / "versions" / "0001_create_account.py").write_text(STEP_1)
    (tmp_path / "versions" / "0002_email.py").write_text(STEP_2)
    config = Config()
    config.set_main_option("script_location", str(tmp_path))
    config.set_main_option("sqlalchemy.url", url)
    engine = sa.create_engine(url)
    yield config, engine, tmp_path
    engine.dispose()


def columns(engine, table) -> dict[str, dict]:
    return {c["name"]: c for c in sa.inspect(engine).get_columns(table)}


def current(engine) -> list[str]:
    with engine.connect() as conn:
        return [r[0] for r in conn.exec_driver_sql("SELECT version_num FROM alembic_version")]


def test_impl_is_registered_for_dqlite():
    dialect = sa.create_engine("dqlite://127.0.0.1:1/x").dialect
    assert DefaultImpl.get_by_dialect(dialect) is DqliteImpl
    assert DqliteImpl.transactional_ddl


def test_upgrade_and_downgrade_two_steps(migrations):
    config, engine, _ = migrations
    command.upgrade(config, "0001")
    assert current(engine) == ["0001"]
    assert set(columns(engine, "account")) == {"id", "name", "active"}
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO account (id, name, active) VALUES (1, 'ann', NULL), (2, 'bob', 1)")

    command.upgrade(config, "head")
    assert current(engine) == ["0002"]
    cols = columns(engine, "account")
    assert set(cols) == {"id", "name", "active", "email"}
    assert cols["name"]["nullable"] is False and cols["name"]["type"].length == 80
    assert isinstance(cols["active"]["type"], sa.BOOLEAN)
    indexes = {i["name"]: i for i in sa.inspect(engine).get_indexes("account")}
    assert indexes["ix_account_email"]["unique"]
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, name, active, email FROM account ORDER BY id")).all()
    assert rows == [(1, "ann", None, None), (2, "bob", 1, None)]  # kept through the table copy
    with engine.begin() as conn, pytest.raises(sa.exc.IntegrityError):
        conn.exec_driver_sql("INSERT INTO account (id, name) VALUES (3, NULL)")

    command.downgrade(config, "0001")
    assert current(engine) == ["0001"]
    cols = columns(engine, "account")
    assert set(cols) == {"id", "name", "active"} and cols["name"]["nullable"] is True
    assert sa.inspect(engine).get_indexes("account") == []

    command.downgrade(config, "base")
    assert current(engine) == []
    assert sa.inspect(engine).get_table_names() == ["alembic_version"]


def test_failed_migration_is_rolled_back(migrations):
    config, engine, path = migrations
    (path / "versions" / "0003_broken.py").write_text(STEP_3_BROKEN)
    command.upgrade(config, "0002")
    with pytest.raises(sa.exc.OperationalError, match="no_such_table"):
        command.upgrade(config, "0003")
    assert current(engine) == ["0002"]
    assert "half" not in sa.inspect(engine).get_table_names()
