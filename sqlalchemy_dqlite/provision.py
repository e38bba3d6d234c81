"""Test provisioning for SQLAlchemy's test plugin (``sqlalchemy.testing``).

Loaded by the plugin through ``Dialect.load_provisioning()``.  A dqlite
database is created by opening it, and cannot be deleted (only its tables),
so a follower database (pytest-xdist worker) just gets a name of its own.
"""

from __future__ import annotations

from sqlalchemy.testing.provision import (
    drop_db,
    create_db,
    follower_url_from_main,
    temp_table_keyword_args,
)


@follower_url_from_main.for_db("dqlite")
def _dqlite_follower_url_from_main(url, ident):
    return url.set(database=f"{url.database}_{ident}")


@create_db.for_db("dqlite")
def _dqlite_create_db(cfg, eng, ident):
    """Nothing to do: the first connection creates the database."""


@drop_db.for_db("dqlite")
def _dqlite_drop_db(cfg, eng, ident):
    """Nothing to do: dqlite cannot delete a database; the suite drops its tables."""


@temp_table_keyword_args.for_db("dqlite")
def _dqlite_temp_table_keyword_args(cfg, eng):
    return {"prefixes": ["TEMPORARY"]}
