"""`make demo`: the whole product offline, against the bundled replica on loopback.

Starts the replica on a free port, runs `spp sync` against it into --db, then `spp status`.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

from pipelines import cli
from pipelines.replica.generator import DATA_DIR
from pipelines.replica.server import make_server


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipelines.demo")
    p.add_argument("--db", default="data/spp.duckdb")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--data", type=Path, default=DATA_DIR / "experiences_sample.jsonl.gz")
    args = p.parse_args(argv)
    server = make_server(args.data, "127.0.0.1", args.port)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    print(f"demo: replica serving {server.store.rows} experiences at {url}", flush=True)
    try:
        code = cli.main(["sync", "--base-url", url, "--db", args.db])
        if code == 0:
            code = cli.main(["status", "--db", args.db])
        return code
    finally:
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    sys.exit(main())
