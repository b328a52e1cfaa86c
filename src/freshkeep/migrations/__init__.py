"""Alembic migrations of freshkeep's own tables, shipped inside the package.

Run them with :func:`freshkeep.sql.migrate.upgrade` or ``freshkeep migrate``; they keep
their own version table (``freshkeep_alembic_version``), so they never touch the application's
Alembic history.
"""
