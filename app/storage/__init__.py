"""Object storage (obstore): session files and their metadata."""

from .store import FileMeta, FileStore, StorageUnavailable, create_object_store

__all__ = ["FileMeta", "FileStore", "StorageUnavailable", "create_object_store"]
