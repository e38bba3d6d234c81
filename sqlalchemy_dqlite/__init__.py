"""SQLAlchemy 2.x dialect for dqlite: ``dqlite://`` (sync) and ``dqlite+aio://`` (asyncio).

    engine = sqlalchemy.create_engine("dqlite:///app?host=10.0.0.1:9001&host=10.0.0.2:9001")

The dialects are found through the ``sqlalchemy.dialects`` entry points:
:mod:`sqlalchemy_dqlite.base` (sync, on ``dqlite``), :mod:`sqlalchemy_dqlite.aio`
(on ``dqlite.aio``); Alembic's migration implementation is in
:mod:`sqlalchemy_dqlite.alembic_impl`, SQLAlchemy's compliance-suite
requirements in :mod:`sqlalchemy_dqlite.requirements`.
"""
