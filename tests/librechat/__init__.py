"""Today's LibreChat client, driven from Node against the running server.

``package.json`` / ``package-lock.json`` pin ``@librechat/agents``; the
``librechat`` fixture (``client.py``) installs them once with ``npm ci`` into
``.k8si-test/librechat`` (again only when the lock file changes) and runs the small
Node scripts of ``scripts/`` there. Each script reads one JSON object on stdin
(``baseUrl``, ``apiKey`` and its own fields), calls the package's exported
functions exactly as LibreChat does, and prints one JSON object on stdout.
"""
