"""Call records in a real database (SQLAlchemy async + Alembic): SQLite by default, PostgreSQL by URL."""

from callgate.store.store import CallStore, StoreStats
from callgate.store.tokens import DbTokenStore, FallbackTokenStore, TokenStoreUnavailable

__all__ = ["CallStore", "DbTokenStore", "FallbackTokenStore", "StoreStats", "TokenStoreUnavailable"]
