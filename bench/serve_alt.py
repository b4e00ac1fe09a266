"""The gateway's app under another HTTP server, for comparing servers in bench/run.py
(targets gateway-granian, gateway-h11):

    python bench/serve_alt.py granian|h11 CONFIG PORT

- granian: the Rust server (hyper), whose HTTP/1 settings include a header read timeout;
  `pip install granian` first (it is not one of the gateway's dependencies).
- h11: uvicorn with the pure-Python h11 parser instead of httptools.

Neither has the gateway's own guards (gateway/server/http.py): no connection cap, no 408
in the OpenAI shape, no body deadline. The gateway is built as a worker process builds it
(`gateway.app:app_from_env`), recording into the configured store.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    server, config, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    os.environ["LLM_GATEWAY_CONFIG"] = config
    if server == "granian":
        from granian.constants import Interfaces, Loops
        from granian.server import Server

        Server(
            "gateway.app:app_from_env",
            address="127.0.0.1",
            port=port,
            interface=Interfaces.ASGI,
            factory=True,
            loop=Loops.uvloop,
            log_access=False,
        ).serve()
    elif server == "h11":
        import uvicorn

        uvicorn.run(
            "gateway.app:app_from_env",
            factory=True,
            host="127.0.0.1",
            port=port,
            http="h11",
            loop="uvloop",
            lifespan="on",
            access_log=False,
            log_config=None,
            server_header=False,
            date_header=False,
        )
    else:
        raise SystemExit(f"unknown server {server!r}: granian or h11")


if __name__ == "__main__":
    main()
