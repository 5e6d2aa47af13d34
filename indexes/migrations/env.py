"""Alembic environment: runs on the connection that indexes.migrations.upgrade hands over.

target_metadata is the one metadata of the database: the photo catalog's tables and the saved
results' (indexes.records), so autogenerate and the schema test see every table.
"""

from alembic import context

from cliplab.indexes import records  # noqa: F401 (registers the saved-results tables on the catalog's Base)
from cliplab.indexes.catalog import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata,
                  render_as_batch=connection.dialect.name == "sqlite")  # SQLite alters tables by copying
with context.begin_transaction():
    context.run_migrations()
