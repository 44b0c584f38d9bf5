"""A completions server that misbehaves on purpose, for the inference stage's negative cases.

    python fake_server.py --port P --mode MODE [--tag TAG]

Modes: ok (answers " sleeps ."), never-healthy (binds nothing, and leaves a grandchild
that sleeps too: both must be gone once the harness gives up), crash (healthy, then exits
with code 3 on the first completion request), empty (answers an empty completion),
text-number / text-null / text-list / text-nan (a completion whose text is no string),
trickle-health / trickle-completion (an answer sent one byte every 0.3 s, on /health or on a
completion), huge (a 2 MB completion, whatever max_tokens asked).
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

TEXTS = {"text-number": 42, "text-null": None, "text-list": ["a", "b"], "text-nan": float("nan")}
MODES = ("ok", "never-healthy", "crash", "empty", "trickle-health", "trickle-completion", "huge", *TEXTS)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    if args.mode == "never-healthy":
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", args.tag])
        time.sleep(600)
        return

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, body: dict, trickle: bool = False) -> None:
            data = json.dumps(body).encode()  # NaN is written as NaN, as Python's servers do
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data) * (100 if trickle else 1)))
            self.end_headers()
            if not trickle:
                self.wfile.write(data)
                return
            while True:  # never done: one byte every 0.3 s, each read well within any per-read timeout
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.3)

        def do_GET(self) -> None:
            self._answer({"status": "ok"}, trickle=args.mode == "trickle-health")

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            if args.mode == "crash":
                print("crashing on request", file=sys.stderr, flush=True)
                os._exit(3)
            text = TEXTS.get(args.mode, "" if args.mode == "empty" else " sleeps .")
            if args.mode == "huge":
                text = " sleeps ." * 230_000
            self._answer({"choices": [{"index": 0, "text": text}]}, trickle=args.mode == "trickle-completion")

        def log_message(self, *_: object) -> None:
            pass

    HTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
