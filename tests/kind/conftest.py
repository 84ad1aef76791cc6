"""The kind suite (`make test-kind`, hack/test-kind.sh): against the kind cluster hack/kind.sh made, with
KUBECONFIG, PATH (kind, helm, .venv) and DOCKER_HOST (kind's dockerd) set by hack/test-kind.sh. Elsewhere
its tests are skipped with the way to run them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    skip = None
    if os.environ.get("NMISIM_KIND") != "1":
        skip = pytest.mark.skip(reason="runs in a kind cluster of hack/kind.sh: `make test-kind`")
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.kind)
            if skip is not None:
                item.add_marker(skip)
