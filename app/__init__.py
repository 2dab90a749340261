"""K8sInterpreter's control plane: a Litestar API that runs untrusted code in sandboxes.

Start at ``app.main.create_app`` (wiring), ``app.cli`` (the ``k8si`` command) and
ARCHITECTURE.md (the map).
"""

__version__ = "0.1.0"
