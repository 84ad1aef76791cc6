"""`make bench`: nmisim on the embedded cluster, measured against the API server's own limits.

Every figure sits beside the same work done by a bare client in the same run. Writes are counted from
kube-apiserver's audit log (the operator's own user), not from the operator's bookkeeping.

    .venv/bin/python hack/bench [--tier XS|S|M] [--keep-cluster] [--no-engine]

Phases (bench.phases, one function each): a cluster of its own (.cluster-bench, audit log on), generated
namespaces/exceptions/identities/pods, the bare client's writes, the operator's cold start, no-op updates,
verdict changes at 20/s (freshness), exception fan-out over 1,000 pods, steady memory, a restart, the 429s
of the whole run, and the engine benchmark. Their figures fill one typed :class:`bench.results.Results`,
which writes .bench/results.json, decides the targets, prints the summary and draws .bench/report.png.

Importing this package (or any module of it) changes nothing: no environment variable, no matplotlib
backend, no cluster; everything happens in :func:`bench.__main__.main`.
"""
