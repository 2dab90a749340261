"""The benchmark of ``shared/spec/performance.md`` (``nox -s bench``, ``python -m bench``).

Every figure is measured against a baseline of the same run: a bare ``python3``
spawn, a bare ``import pandas``, and a naive spawn-per-request service built here
(``bench.naive``). Modules: ``runner`` (the order of the run), ``service`` (the real
service as a child process, cold starts), ``figures`` (local-backend figures),
``kube`` (the Kubernetes path against a real control plane), ``load`` (a lean HTTP
client and closed-loop load), ``naive`` (the naive service), ``report`` (the table
and ``BENCHMARKS.md``). Traffic goes only to 127.0.0.1; every loop is bounded in
count and time. A benchmark is not a test: nothing here asserts.
"""
