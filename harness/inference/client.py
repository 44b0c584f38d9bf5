"""One HTTP request to the server under test, bounded in time and size as a whole.

requests' `timeout` bounds each read, not the request: a server that sends one byte every
0.3 s is never cut off, and one that answers 2 MB is read whole. Here the request runs in a
daemon thread that reads at most `limit` bytes, and the caller waits for it until a
deadline; one that misses it is given up (the caller stops the server, which closes the
connection and ends the thread). The wait is interruptible, so SIGINT and SIGTERM end it at once.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

import requests

CHUNK = 1 << 16


class RequestFailed(Exception):
    """The request failed, timed out or answered too much; the message says which, in one line."""


@dataclass
class Answer:
    status: int
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except RecursionError:
            raise ValueError("the answer is JSON nested too deeply to read") from None


def _read(method: str, url: str, limit: int, kwargs: dict[str, Any], result: dict[str, Any]) -> None:
    try:
        with requests.request(method, url, stream=True, **kwargs) as response:
            body = bytearray()
            for chunk in response.iter_content(CHUNK):
                body += chunk
                if len(body) > limit:
                    raise RequestFailed(f"the answer is over {limit} bytes, the most read; not read further")
            result["answer"] = Answer(response.status_code, bytes(body))
    except (requests.RequestException, RequestFailed) as error:
        result["error"] = error
    except Exception as error:  # noqa: BLE001 - whatever the thread meets is the request's failure, said by the caller
        result["error"] = RequestFailed(f"{type(error).__name__}: {error}")


def request(method: str, url: str, *, seconds: float, limit: int, **kwargs: Any) -> Answer:
    """The answer to one request that took at most `seconds` in all and sent at most `limit` bytes of body.

    Raises RequestFailed (time or size) or the requests exception the request met.
    """
    result: dict[str, Any] = {}
    # The connection and each read are bounded too, so the thread of a request given up does not outlive
    # the server for long.
    kwargs.setdefault("timeout", max(0.1, seconds))
    thread = threading.Thread(target=_read, args=(method, url, limit, kwargs, result), daemon=True)
    thread.start()
    thread.join(max(0.0, seconds))
    if thread.is_alive():
        raise RequestFailed(f"no whole answer within {seconds:.3g} s")
    if "error" in result:
        raise result["error"]
    return result["answer"]
