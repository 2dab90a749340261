"""Object storage (obstore): session files and their metadata."""

from .store import FileBytesMissing, FileMeta, FileStore, StorageUnavailable, create_object_store

__all__ = ["FileBytesMissing", "FileMeta", "FileStore", "StorageUnavailable",
           "create_object_store"]
