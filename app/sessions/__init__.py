"""Sessions: which session an execution runs in, kept in Valkey."""

from .store import Session, SessionStore, check_entity_id

__all__ = ["Session", "SessionStore", "check_entity_id"]
