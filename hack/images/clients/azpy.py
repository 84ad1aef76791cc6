"""azpy asks for a token the way a Python application on an AKS node does: azure-identity's
ManagedIdentityCredential (IMDS at http://169.254.169.254, or AZURE_POD_IDENTITY_AUTHORITY_HOST when
set). It prints one JSON line: {"ok": true, "token": ..., "expires_on": ...} or {"ok": false, "error":
the exception's type, "message": ..., "status": the HTTP status when the SDK kept it, "cause": the
type of the exception it was raised from}, and the seconds the
call took. hack/image.sh installs it with azure-identity (wheels from PyPI) into nmisim-clients:dev.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from azure.identity import ManagedIdentityCredential


def status_of(err: BaseException | None) -> int | None:
    """The HTTP status behind the SDK's error: azure-identity raises CredentialUnavailableError from
    the HttpResponseError that carried IMDS's (here: NMI's) answer."""
    while err is not None:
        status = getattr(getattr(err, "response", None), "status_code", None)
        if isinstance(status, int):
            return status
        err = err.__cause__ or err.__context__
    return None


def main() -> None:
    parser = argparse.ArgumentParser(prog="azpy")
    parser.add_argument("--client-id", default=None)
    parser.add_argument("--scope", default="https://management.azure.com/.default")
    parser.add_argument("--retries", type=int, default=None, help="retry_total (default: the SDK's)")
    args = parser.parse_args()
    kwargs: dict[str, Any] = {}
    if args.retries is not None:
        kwargs["retry_total"] = args.retries
    out: dict[str, Any] = {}
    start = time.monotonic()
    try:
        credential = ManagedIdentityCredential(client_id=args.client_id, **kwargs)
        token = credential.get_token(args.scope)
        out.update(ok=True, token=token.token, expires_on=token.expires_on)
    except Exception as err:  # the SDK's error is the result
        out.update(ok=False, error=type(err).__name__, message=str(err), status=status_of(err))
        out["cause"] = type(err.__cause__).__name__ if err.__cause__ else None
    out["seconds"] = round(time.monotonic() - start, 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
