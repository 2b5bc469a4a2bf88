"""Alembic environment of the audit database (see gateway.store.db.run_migrations_env)."""

from gateway.audit.models import Base
from gateway.store.db import run_migrations_env

run_migrations_env(Base.metadata)
