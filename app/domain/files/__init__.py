"""Files: upload, download, list, freshness probe and delete, in the object store."""

from .controller import FilesController
from .service import FileService

__all__ = ["FileService", "FilesController"]
