import os
import subprocess
from pathlib import Path

import pytest

HELM_SH = Path(__file__).resolve().parents[2] / "hack" / "helm.sh"


def _must_have_helm() -> bool:
    return os.environ.get("NMISIM_REAL_NODE") == "1" or bool(os.environ.get("CI"))


@pytest.fixture(scope="session")
def helm() -> str:
    """helm from hack/helm.sh (built from its Go modules into the tool cache when missing). Without Go the
    tests that need it skip, except where NMISIM_REAL_NODE=1 or CI is set: there a missing helm fails them."""
    path = Path(
        subprocess.run([str(HELM_SH), "--print"], capture_output=True, text=True, check=True).stdout.strip()
    )
    if not os.access(path, os.X_OK):
        proc = subprocess.run([str(HELM_SH)], capture_output=True, text=True, check=False, timeout=1700)
        if proc.returncode != 0 or not os.access(path, os.X_OK):
            reason = f"hack/helm.sh could not build helm:\n{proc.stderr[-3000:]}"
            if _must_have_helm():
                pytest.fail(reason)
            pytest.skip(reason)
    return str(path)
