"""Sessions: which session an execution runs in, kept in Valkey."""

from .store import Session, SessionStore

__all__ = ["Session", "SessionStore"]
