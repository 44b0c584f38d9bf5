"""A completions server that misbehaves on purpose, for the inference stage's negative cases.

    python fake_server.py --port P --mode MODE [--tag TAG]

Modes: ok (answers " sleeps ."), never-healthy (binds nothing, and leaves a grandchild
that sleeps too: both must be gone once the harness gives up), crash (healthy, then exits
with code 3 on the first completion request), empty (answers an empty completion).
--tag only marks the processes' command lines, so a test can look for leftovers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=("ok", "never-healthy", "crash", "empty"), required=True)
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    if args.mode == "never-healthy":
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", args.tag])
        time.sleep(600)
        return

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._answer({"status": "ok"})

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            if args.mode == "crash":
                print("crashing on request", file=sys.stderr, flush=True)
                os._exit(3)
            self._answer({"choices": [{"index": 0, "text": "" if args.mode == "empty" else " sleeps ."}]})

        def log_message(self, *_: object) -> None:
            pass

    HTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
