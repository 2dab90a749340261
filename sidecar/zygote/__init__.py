"""The zygote: the executor's fork-server, the execution side of a zygote sandbox.

A Python with the executor and the data stack imported (``server``) forks into
fresh sandboxes on request; each child builds nsjail's layout, identity and limits
(``jail``), installs the one seccomp policy (``seccomp``, from
``sidecar.seccomp_policy``) and serves as the executor, whose warm Python worker is
forked rather than executed (``worker``). The API starts it and talks to it over a
control socket (its client: ``app/backends/local/zygote.py``). Standard library only.
"""
