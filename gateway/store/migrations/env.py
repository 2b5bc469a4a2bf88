"""Alembic environment of the store database (see gateway.store.db.run_migrations_env)."""

from gateway.store.db import run_migrations_env
from gateway.store.models import Base

run_migrations_env(Base.metadata)
