"""Container health check: exit 0 when the local agent answers GET /v1/info with the token.
    python -m edgekd.agent.health [TOKEN_FILE] [PORT]"""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path

DEFAULT_TOKEN_FILE = "/run/secrets/edgekd-token"


def main(argv: list[str]) -> int:
    token_file = Path(argv[0] if argv else DEFAULT_TOKEN_FILE)
    port = int(argv[1]) if len(argv) > 1 else 8765
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/info",
                                 headers={"Authorization": "Bearer " + token_file.read_text().strip()})
    try:
        with urllib.request.urlopen(req, timeout=4) as r:  # noqa: S310 - loopback only
            return 0 if r.status == 200 else 1
    except OSError:
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
