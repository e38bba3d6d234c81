"""SQLAlchemy's third-party dialect compliance suite, run against a real cluster.

A few suite tests assume things that requirements cannot switch off; they are
adapted below, each with the reason.
"""

import pytest
from sqlalchemy import MetaData, inspect, testing
from sqlalchemy.testing import eq_
from sqlalchemy.testing.suite import *  # noqa: F401,F403
from sqlalchemy.testing.suite import ComponentReflectionTest as _ComponentReflectionTest
from sqlalchemy.testing.suite import ComponentReflectionTestExtra as _ComponentReflectionTestExtra
from sqlalchemy.testing.suite import IsolationLevelTest as _IsolationLevelTest


class ComponentReflectionTest(_ComponentReflectionTest):
    # Reflects the test schema too, without asking the 'schemas' requirement.
    # Replaced by the same check without the schema.
    @testing.combinations(True, False, argnames="views")
    def test_metadata(self, connection, views):
        metadata = MetaData()
        metadata.reflect(connection, views=views, resolve_fks=False)
        inspector = inspect(connection)
        names = set(inspector.get_table_names())
        if views:
            names |= set(inspector.get_view_names())
        eq_(set(metadata.tables), names)


class ComponentReflectionTestExtra(_ComponentReflectionTestExtra):
    # The suite runs these CHECK constraint tests in the test schema too,
    # without asking the 'schemas' requirement; dqlite has no schemas.
    @testing.fixture(params=[False])
    def use_schema_fixture(self, request):
        return None


class IsolationLevelTest(_IsolationLevelTest):
    def test_dialect_user_setting_is_restored(self):
        pytest.skip("needs two isolation levels besides AUTOCOMMIT; SQLite has only SERIALIZABLE")
