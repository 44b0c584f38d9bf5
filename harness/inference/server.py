"""The built-in server: any Hugging Face causal-LM checkpoint behind an OpenAI completions endpoint.

`inference.server: builtin` starts it (as `python -m harness serve --checkpoint DIR --port P`)
on a checkpoint saved with `save_pretrained` (Trainer, TRL, Forgather, torchtitan's HF export).
The model is loaded before the socket is bound, so a healthy server answers at once; the
completion starts with the space that separates it from the prompt; requests are logged on
stdout (stderr is kept for real problems); nothing is written to disk. It runs on the devices
the spec holds (CUDA_VISIBLE_DEVICES), and each request is sampled from a fixed seed, so the
same request always gets the same answer. Like perplexity.py, it imports torch and transformers
and is outside the harness core.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import signal
import socket
import sys
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase
from transformers import logging as hf_logging

MAX_BODY_BYTES = 1 << 20


class BadRequest(Exception):
    """A request the client must fix; its message goes back in a 400 answer."""


def argument_problem(args: argparse.Namespace) -> str | None:
    """Why the arguments cannot be served, or None. A non-loopback --host is refused unless
    --allow-remote: the server has no authentication, so it is reachable from this machine only
    unless someone asks otherwise on purpose."""
    if not args.checkpoint.is_dir():
        return f"--checkpoint {args.checkpoint} is not a directory"
    if args.device == "cuda" and not torch.cuda.is_available():
        return "--device cuda was asked for but CUDA is not available"
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(args.host, args.port, type=socket.SOCK_STREAM)}
    except socket.gaierror as error:
        return f"--host {args.host}: {error.strerror}"
    if not args.allow_remote and not all(ipaddress.ip_address(str(a).split("%")[0]).is_loopback for a in addresses):
        return f"--host {args.host} is not a loopback address; pass --allow-remote to serve it anyway"
    return None


class Completer:
    """The model, its tokenizer and the lock that makes seeded sampling reproducible.

    generate() samples from torch's global RNG, so each request reseeds it and
    holds the lock while generating: the answer depends on the request and
    --seed alone, not on which requests came before or run alongside.
    """

    def __init__(self, checkpoint: Path, device: torch.device, seed: int) -> None:
        self.tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(checkpoint)
        # Typed by what from_pretrained declares, a model with generate(): PreTrainedModel alone lacks it.
        self.model = AutoModelForCausalLM.from_pretrained(checkpoint)
        # PreTrainedModel.to is wrapped by functools.wraps, which type checkers do not bind as a method; called
        # through the model's nn.Module type it is the same method, and it moves the model in place.
        module: torch.nn.Module = self.model
        module.to(device)
        self.model.eval()
        self.device = device
        self.seed = seed
        self._lock = threading.Lock()

    def complete(self, prompt: str, max_tokens: int, temperature: float) -> tuple[str, str, int, int]:
        """Return (text, finish_reason, prompt_tokens, completion_tokens)."""
        ids = self.tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"].to(self.device)
        prompt_tokens = ids.shape[1]
        if prompt_tokens == 0:
            raise BadRequest("prompt has no tokens")
        # Models name their context differently (GPT-2: n_positions, aliased); some have no limit.
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit is not None and prompt_tokens + max_tokens > limit:
            raise BadRequest(
                f"prompt ({prompt_tokens} tokens) + max_tokens ({max_tokens}) exceeds the context of {limit}"
            )
        # Plain temperature sampling, as OpenAI's API does: no top-k or top-p
        # that a checkpoint's generation_config might bring.
        decoding: dict[str, Any] = (
            {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
            if temperature > 0
            else {"do_sample": False}
        )
        with self._lock, torch.no_grad():
            torch.manual_seed(self.seed)
            output = self.model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_tokens,
                eos_token_id=self.tokenizer.eos_token_id,
                # Many causal LMs (GPT-2) have no pad token; generate() only needs one to pad with.
                pad_token_id=self.tokenizer.pad_token_id
                if self.tokenizer.pad_token_id is not None
                else self.tokenizer.eos_token_id,
                **decoding,
            )[0]
        new = output[prompt_tokens:]
        stopped = len(new) > 0 and new[-1].item() == self.tokenizer.eos_token_id
        # Decoding prompt + completion and cutting off the decoded prompt keeps
        # the space between them (a word-level tokenizer joins tokens with
        # spaces), so prompt + text reads as the corpus does.
        full = self.tokenizer.decode(output, skip_special_tokens=True)
        text = full[len(self.tokenizer.decode(output[:prompt_tokens], skip_special_tokens=True)) :]
        return text, "stop" if stopped else "length", prompt_tokens, len(new)


def parse_completion_request(body: bytes) -> tuple[str, int, float]:
    """Validate a /v1/completions body into (prompt, max_tokens, temperature).

    bool is an int subclass in Python, so it is refused explicitly: `true` is
    not a token count. Fields other than these three are ignored, as clients
    send OpenAI's full set.
    """
    try:
        request = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadRequest(f"body is not valid JSON: {error}") from None
    if not isinstance(request, dict):
        raise BadRequest("body must be a JSON object")
    prompt = request.get("prompt")
    if not isinstance(prompt, str):
        raise BadRequest("prompt must be a string")
    max_tokens = request.get("max_tokens", 16)
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise BadRequest("max_tokens must be an integer of at least 1")
    temperature = request.get("temperature", 1.0)
    if (
        not isinstance(temperature, (int, float))
        or isinstance(temperature, bool)
        or not math.isfinite(temperature)
        or temperature < 0
    ):
        raise BadRequest("temperature must be a number of at least 0 (0 is greedy)")
    return prompt, max_tokens, float(temperature)


def make_handler(completer: Completer, model_name: str) -> type[BaseHTTPRequestHandler]:
    """Bind the completer into a request handler class, as http.server wants a class."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            # http.server logs to stderr; requests are not problems, so stdout.
            print(f"{self.address_string()} {format % args}", flush=True)

        def _reply(self, status: int, payload: dict[str, Any]) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: int, message: str) -> None:
            self._reply(status, {"error": {"message": message}})

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            if path == "/health":
                self._reply(200, {"status": "ok", "model": model_name, "model_loaded": True})
            elif path == "/v1/completions":
                self._error(405, "use POST for /v1/completions")
            else:
                self._error(404, f"no such path: {path}")

        def do_POST(self) -> None:
            path = urlsplit(self.path).path
            if path != "/v1/completions":
                self._error(405 if path == "/health" else 404, f"no POST endpoint at {path}")
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self._error(413, f"body over {MAX_BODY_BYTES} bytes")
                return
            try:
                prompt, max_tokens, temperature = parse_completion_request(self.rfile.read(length))
                text, finish_reason, prompt_tokens, completion_tokens = completer.complete(
                    prompt, max_tokens, temperature
                )
            except BadRequest as error:
                self._error(400, str(error))
                return
            except Exception as error:  # a failed generation is a server bug: say so, keep serving
                traceback.print_exc()
                self._error(500, f"{type(error).__name__}: {error}")
                return
            self._reply(
                200,
                {
                    "id": f"cmpl-{uuid.uuid4().hex}",
                    "object": "text_completion",
                    "created": int(time.time()),
                    "model": model_name,
                    "choices": [{"index": 0, "text": text, "finish_reason": finish_reason}],
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": completion_tokens,
                        "total_tokens": prompt_tokens + completion_tokens,
                    },
                },
            )

    return Handler


def serve(args: argparse.Namespace) -> None:
    """Load the checkpoint, then answer requests until SIGTERM or SIGINT."""
    # transformers 5 draws a loading bar on stderr; stderr is for real problems.
    hf_logging.disable_progress_bar()
    device = torch.device(
        "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    )
    completer = Completer(args.checkpoint, device, args.seed)
    model_name = str(args.checkpoint)

    class Server(ThreadingHTTPServer):
        # Bind the family --host resolves to, so "::1" works as well as 127.0.0.1.
        address_family = socket.getaddrinfo(args.host, args.port, type=socket.SOCK_STREAM)[0][0]

    try:
        server = Server((args.host, args.port), make_handler(completer, model_name))
    except OSError as error:  # one line, not a traceback: a taken port is an expected failure
        sys.exit(f"harness serve: cannot listen on {args.host} port {args.port}: {error.strerror or error}")

    def stop(signum: int, frame: object) -> None:
        # shutdown() waits for serve_forever() to return, which runs in this
        # (main) thread, so it must be called from another one.
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"serving {model_name} on http://{host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    print("stopped", flush=True)
