"""The process of a `model:` turn of the script harness: one streamed chat completion, as an agent CLI makes it.

Run inside a sandbox: `python model_turn.py TAG`. It asks `$LLM_BASE_URL/v1/chat/completions` (the
sandbox's LLM proxy) with the stub key `$LLM_API_KEY` for model `$LLM_MODEL`, streaming, the
message naming TAG (so the gateway's log tells the turns' requests apart), and prints each text
delta of the answer as a line as it comes. A request that fails or whose stream breaks before its
`[DONE]` is made again from the start, as the real CLIs do, after a line `retry N: WHY`; it gives
up (exit 1) after `GIVE_UP` seconds. Standard library only: it runs with whatever Python the
sandbox has.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import time
from typing import Any
from urllib.parse import urlsplit

GIVE_UP = 60.0
PROMPT = "chaos turn "
"""The message of the request: this, then the turn's tag."""


class Broken(Exception):
    """The answer did not come whole."""


def _ask(tag: str) -> None:
    """Make the request once and print the deltas of its answer; raise `Broken` (or OSError) if it breaks."""
    base = urlsplit(os.environ["LLM_BASE_URL"])
    body = {
        "model": os.environ["LLM_MODEL"],
        "stream": True,
        "messages": [{"role": "user", "content": PROMPT + tag}],
    }
    headers = {"authorization": f"Bearer {os.environ['LLM_API_KEY']}", "content-type": "application/json"}
    connection = http.client.HTTPConnection(base.hostname or "", base.port or 80, timeout=30)
    try:
        connection.request("POST", "/v1/chat/completions", json.dumps(body), headers)
        response = connection.getresponse()
        if response.status != 200:
            raise Broken(f"status {response.status}: {response.read(300)!r}")
        for raw in response:
            line = raw.strip()
            if line == b"data: [DONE]":
                return
            if line.startswith(b"data: "):
                for choice in json.loads(line[6:]).get("choices") or []:
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        print(text.rstrip("\n"), flush=True)
        raise Broken("the stream ended before [DONE]")
    finally:
        connection.close()


def tag_of(request: dict[str, Any]) -> str | None:
    """The tag of the turn that made a request the fake LLM recorded (None: not a `model:` turn's)."""
    messages = request.get("body", {}).get("messages") or [{}]
    content = messages[-1].get("content")
    return content.removeprefix(PROMPT) if isinstance(content, str) and content.startswith(PROMPT) else None


def main() -> int:
    tag = sys.argv[1]
    deadline = time.monotonic() + GIVE_UP
    retries = 0
    while True:
        try:
            _ask(tag)
            return 0
        except (Broken, OSError, http.client.HTTPException, ValueError) as error:
            if time.monotonic() > deadline:
                print(f"gave up: {error}", flush=True)
                return 1
            retries += 1
            print(f"retry {retries}: {type(error).__name__}: {error}"[:300], flush=True)
            time.sleep(min(0.1 * retries, 1.0))


if __name__ == "__main__":
    sys.exit(main())
