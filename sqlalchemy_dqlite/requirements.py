"""What the dqlite dialect supports, for SQLAlchemy's compliance suite.

``sqlalchemy.testing.suite`` asks these properties which tests apply.  A
requirement is opened where SQLite 3.40 (the SQLite of the oldest server we
support, libdqlite 1.11.1 on Debian bookworm) and the driver can do it, and
closed with a one-line reason where they cannot.  Requirements left at the
suite's default are not listed.
"""

from __future__ import annotations

from sqlalchemy.testing import exclusions
from sqlalchemy.testing.requirements import SuiteRequirements


def closed(reason: str):
    """A closed requirement; the reason is shown for every test it skips."""
    return exclusions.closed(reason)


def _server_sqlite(config) -> tuple[int, ...]:
    return config.db.dialect.server_version_info or (0,)


def sqlite_at_least(version: tuple[int, ...], what: str):
    return exclusions.only_if(
        lambda config: _server_sqlite(config) >= version,
        f"{what} needs SQLite {'.'.join(map(str, version))} on the server",
    )


class Requirements(SuiteRequirements):
    # -- DDL -----------------------------------------------------------------

    @property
    def table_ddl_if_exists(self):
        return exclusions.open()

    @property
    def index_ddl_if_exists(self):
        return exclusions.open()

    @property
    def create_table_as(self):
        return exclusions.open()

    @property
    def create_temp_table_as(self):
        return closed("temporary tables live on one node's connection only and are not replicated")

    @property
    def unicode_ddl(self):
        return exclusions.open()

    @property
    def schemas(self):
        return closed("one dqlite database is one SQLite file; ATTACH of other databases is not replicated")

    @property
    def cross_schema_fk_reflection(self):
        return closed("no schemas (see 'schemas')")

    @property
    def implicit_default_schema(self):
        return closed("no schemas (see 'schemas')")

    @property
    def schema_create_delete(self):
        return closed("no CREATE/DROP SCHEMA in SQLite")

    @property
    def temporary_tables(self):
        return closed("temporary tables live on one node's connection only and are not replicated")

    @property
    def temp_table_reflection(self):
        return closed("temporary tables are not supported (see 'temporary_tables')")

    @property
    def temporary_views(self):
        return closed("temporary views live on one node's connection only and are not replicated")

    @property
    def views(self):
        return exclusions.open()

    @property
    def create_or_replace_view(self):
        return closed("SQLite has no CREATE OR REPLACE VIEW")

    @property
    def computed_columns(self):
        return exclusions.open()

    @property
    def computed_columns_stored(self):
        return exclusions.open()

    @property
    def computed_columns_virtual(self):
        return exclusions.open()

    @property
    def computed_columns_reflect_persisted(self):
        return exclusions.open()

    @property
    def deferrable_fks(self):
        return exclusions.open()

    @property
    def indexes_with_expressions(self):
        return exclusions.open()

    @property
    def check_constraint_reflection(self):
        return exclusions.open()

    @property
    def reflects_pk_names(self):
        return exclusions.open()

    @property
    def foreign_key_constraint_name_reflection(self):
        return exclusions.open()

    @property
    def foreign_key_constraint_option_reflection_ondelete(self):
        return exclusions.open()

    @property
    def fk_constraint_option_reflection_ondelete_restrict(self):
        return exclusions.open()

    @property
    def fk_constraint_option_reflection_ondelete_noaction(self):
        return exclusions.open()

    @property
    def foreign_key_constraint_option_reflection_onupdate(self):
        return exclusions.open()

    @property
    def fk_constraint_option_reflection_onupdate_restrict(self):
        return exclusions.open()

    @property
    def implicitly_named_constraints(self):
        return closed("SQLite gives a constraint declared without a name no name of its own")

    @property
    def reflect_indexes_with_expressions(self):
        return closed("SQLAlchemy's SQLite reflection skips expression-based indexes (PRAGMA index_info has no text)")

    @property
    def reflect_table_options(self):
        return exclusions.open()

    @property
    def inline_check_constraint_reflection(self):
        return exclusions.open()

    @property
    def indexes_check_column_order(self):
        return exclusions.open()

    @property
    def repeated_column_foreign_keys(self):
        return exclusions.open()

    @property
    def repeated_remote_col_foreign_keys(self):
        return exclusions.open()

    @property
    def column_collation_reflection(self):
        return closed("SQLAlchemy's SQLite reflection does not report column collations")

    @property
    def server_defaults(self):
        return exclusions.open()

    @property
    def expression_server_defaults(self):
        return exclusions.open()

    @property
    def comment_reflection(self):
        return closed("SQLite has no table or column comments")

    # -- SQL -----------------------------------------------------------------

    @property
    def ctes(self):
        return exclusions.open()

    @property
    def ctes_with_update_delete(self):
        return exclusions.open()

    @property
    def ctes_with_values(self):
        return exclusions.open()

    @property
    def ctes_on_dml(self):
        return closed("SQLite allows no INSERT/UPDATE/DELETE inside a WITH clause")

    @property
    def window_functions(self):
        return exclusions.open()

    @property
    def window_range(self):
        return exclusions.open()

    @property
    def window_range_numeric(self):
        return exclusions.open()

    @property
    def window_range_non_numeric(self):
        return closed("SQLite's RANGE frame offsets need a numeric ORDER BY, not dates")

    @property
    def intersect(self):
        return exclusions.open()

    @property
    def except_(self):
        return exclusions.open()

    @property
    def nullsordering(self):
        return exclusions.open()

    @property
    def tuple_in(self):
        return exclusions.open()

    @property
    def boolean_col_expressions(self):
        return exclusions.open()

    @property
    def table_value_constructor(self):
        return closed("SQLite cannot name the columns of a VALUES list in FROM (AS v (a, b))")

    @property
    def parens_in_union_contained_select_w_limit_offset(self):
        return closed("SQLite does not accept a parenthesized SELECT inside a UNION")

    @property
    def parens_in_union_contained_select_wo_limit_offset(self):
        return closed("SQLite does not accept a parenthesized SELECT inside a UNION")

    @property
    def update_from(self):
        return exclusions.open()

    @property
    def delete_from(self):
        return closed("SQLite's DELETE has no FROM/USING clause for other tables")

    @property
    def mod_operator_as_percent_sign(self):
        return exclusions.open()

    @property
    def order_by_label_with_expression(self):
        return exclusions.open()

    @property
    def aggregate_order_by(self):
        return closed("ORDER BY inside an aggregate needs SQLite 3.44; bookworm's dqlite has 3.40")

    @property
    def supports_bitwise_or(self):
        return exclusions.open()

    @property
    def supports_bitwise_and(self):
        return exclusions.open()

    @property
    def supports_bitwise_not(self):
        return exclusions.open()

    @property
    def supports_bitwise_xor(self):
        return exclusions.open()

    @property
    def supports_bitwise_shift(self):
        return exclusions.open()

    @property
    def regexp_match(self):
        return closed("SQLite has no REGEXP function built in and dqlite cannot register one")

    @property
    def regexp_replace(self):
        return closed("SQLite has no regexp_replace function built in and dqlite cannot register one")

    @property
    def fetch_first(self):
        return closed("SQLite has no FETCH FIRST; LIMIT/OFFSET is used")

    @property
    def sequences(self):
        return closed("SQLite has no sequences")

    @property
    def identity_columns(self):
        return closed("SQLite has no IDENTITY columns")

    @property
    def supports_distinct_on(self):
        return closed("SQLite has no DISTINCT ON")

    # -- DML and results -----------------------------------------------------

    @property
    def insert_returning(self):
        return closed("RETURNING makes a dqlite 1.11 server abort; the driver refuses it")

    @property
    def update_returning(self):
        return closed("RETURNING makes a dqlite 1.11 server abort; the driver refuses it")

    @property
    def delete_returning(self):
        return closed("RETURNING makes a dqlite 1.11 server abort; the driver refuses it")

    @property
    def dbapi_lastrowid(self):
        return exclusions.open()

    @property
    def server_side_cursors(self):
        return closed("the suite recognises server-side cursors by driver name only (dqlite+aio has them)")

    @property
    def two_phase_transactions(self):
        return closed("SQLite has no two-phase commit")

    @property
    def savepoints(self):
        return exclusions.open()

    # -- transactions --------------------------------------------------------

    @property
    def isolation_level(self):
        return exclusions.open()

    @property
    def autocommit(self):
        return exclusions.open()

    @property
    def skip_autocommit_rollback(self):
        return exclusions.open()

    def get_isolation_levels(self, config):
        return {"default": "SERIALIZABLE", "supported": ["SERIALIZABLE", "AUTOCOMMIT"]}

    # -- types ---------------------------------------------------------------

    @property
    def json_type(self):
        return exclusions.open()

    @property
    def legacy_unconditional_json_extract(self):
        return exclusions.open()

    @property
    def datetime_literals(self):
        return exclusions.open()

    @property
    def datetime_historic(self):
        return exclusions.open()

    @property
    def date_historic(self):
        return exclusions.open()

    @property
    def timestamp_microseconds(self):
        return exclusions.open()

    @property
    def datetime_timezone(self):
        return closed("SQLite stores no time zone with a date/time value")

    @property
    def time_timezone(self):
        return closed("SQLite stores no time zone with a time value")

    @property
    def datetime_interval(self):
        return closed("SQLite has no INTERVAL type")

    @property
    def uuid_data_type(self):
        return closed("SQLite has no native UUID type (Uuid is stored as text)")

    @property
    def array_type(self):
        return closed("SQLite has no ARRAY type")

    @property
    def infinity_floats(self):
        return exclusions.open()

    @property
    def nvarchar_types(self):
        return exclusions.open()

    def get_order_by_collation(self, config):
        return "BINARY"
