"""A stand-in for Forgather's tools/inference_server/server.py, with the command line its suite uses:

    python tools/inference_server/server.py --model DIR --from-checkpoint --host 127.0.0.1 --port P --log-level WARNING

It refuses a DIR without config.json, answers GET /health with `model_loaded: true`, and
completes every prompt with a sentence of tinylm's grammar. It prints the model dir it
serves and, for a quantized one, its recipe, so a test can tell which dir was served.
"""

import argparse
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

parser = argparse.ArgumentParser()
parser.add_argument("--model", required=True)
parser.add_argument("--from-checkpoint", action="store_true", required=True)
parser.add_argument("--host", required=True)
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--log-level", required=True)
args = parser.parse_args()
try:
    with open(os.path.join(args.model, "config.json")) as stream:
        config = json.load(stream)
except OSError as error:
    sys.exit(f"server.py: cannot load {args.model}: {error}")
quantized = config.get("quantization_config", {}).get("quant_method")


class Handler(BaseHTTPRequestHandler):
    def _answer(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._answer({"status": "healthy", "model_loaded": True})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer({"choices": [{"index": 0, "text": " sees a red ball ."}]})

    def log_message(self, *_: object) -> None:
        pass


print(f"serving {args.model}" + (f" quantized {quantized}" if quantized else ""), flush=True)
HTTPServer((args.host, args.port), Handler).serve_forever()
