"""The executor ("sidecar"): PID 1 of every sandbox, it runs the user's code.

Standard library only, so it runs in any runtime image that has ``python3``. It
serves the executor HTTP contract (see ``server``), runs programs under limits
(``runner``, ``limits``), reads the work dir defensively (``files``), and knows how
each language is built and run (``languages``, the one language table). Python
session state is restored and captured in the user's own interpreter
(``pystate``, run by ``pywarm``); the executor only moves the opaque blob (``state``).
In zygote sandboxes the pages a request writes are copied ahead (``prefault``).
"""

from .languages import LANGUAGES, Language, resolve_language
from .protocol import ExecuteRequest, ExecuteResult

__all__ = ["LANGUAGES", "ExecuteRequest", "ExecuteResult", "Language", "resolve_language"]
