"""`FakeLLM`: a scripted fake model server speaking the OpenAI chat completions, OpenAI Responses
and Anthropic Messages wire formats (streaming and not), stdlib only.

Point a `Lap`'s gateway at it (`LITELLM_API_BASE=fake.url`): LAP's LLM proxy forwards the
sandbox's model requests to it as to a LiteLLM gateway, so no LiteLLM is needed. It serves
`/v1/chat/completions`, `/v1/responses`, `/v1/messages` (and `/v1/models`), with or without `/v1`.

How it answers (`script(...)`, see `DEFAULT_SCRIPT`): if a request offers a shell tool (bash /
shell / exec_command ...) and its current turn (after the last user message) holds no tool
result yet, the reply is one call of that tool running the scripted `command`; with `tool` set,
one call of that tool (when offered) with `tool_arguments`. Otherwise it is the scripted `text`,
split into `chunks` deltas `delay` seconds apart. `fail_status` answers every request with that
HTTP error. Title requests (no tools, a system prompt about titles) get a short title. Tests
script it and read what it received over `/_control/*` too, so it can run in another process:
`python -m lap_core.testing.fake_llm --port N`.

Each recorded request says when it came (`started`, `time.monotonic()` of the server's process),
the W3C `traceparent` header it carried (None without one)
and, streamed, how its answer went: `deltas` sent so far, `ended` (when), `outcome` (`completed`,
or `broken`: the client went away mid-stream).
Each reply reports the script's `usage` (`{"input": 12, "output": 7, "cached": 0}` by default;
`"varied"`: different for every request). A request's record gets the `usage` it reported once
the reply went out whole: a streamed reply whose client hung up before the event with its usage
is not reported (the fake looks before it sends that event).
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from lap_core.testing import _wire as wire

DEFAULT_SCRIPT: dict[str, Any] = {
    "command": "echo fake-tool-ran > fake_tool_ran.txt",
    "text": "FAKE-ANSWER",
    "chunks": 3,
    "delay": 0.0,
    "fail_status": None,
    "tool": None,
    "tool_arguments": {},
    "usage": None,
}
"""The script a fake starts with (and `reset()` restores): every key `script()` takes.

`command` (str or None): the shell command a shell tool call runs (None: call no shell tool);
`text`, `chunks`, `delay`: the text answer, in how many deltas, how many seconds apart;
`fail_status` (int or None): answer every model request with this HTTP error status;
`tool` (str or None): call this tool instead of a shell tool, with `tool_arguments` as its
arguments (for a shell tool, `tool_arguments` are extra arguments the tool takes);
`usage`: what each reply reports (dict of `input`, `output`, `cached` tokens, or `"varied"`).
"""


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        """A client that hangs up mid-request (a CLI exiting) is no error worth a traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class FakeLLM:
    """The fake model server: `start()`, `url`, `script(...)`, `requests()`, `reset()`, `stop()`.

    ```python
    fake = FakeLLM().start()
    fake.script(text="hello", command=None)  # answer "hello", call no tool
    ...  # a Lap whose LITELLM_API_BASE is fake.url runs a turn
    assert fake.requests()[-1]["path"] == "/v1/chat/completions"
    fake.stop()
    ```
    """

    def __init__(self, port: int = 0) -> None:
        self._lock = threading.Lock()
        self._script = dict(DEFAULT_SCRIPT)
        self._requests: list[dict[str, Any]] = []
        self._server = _Server(("127.0.0.1", port), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The server's base URL (`http://127.0.0.1:PORT`): a gateway URL for `LITELLM_API_BASE`."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeLLM:
        """Serve in a daemon thread; return the fake."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()

    def script(self, **changes: Any) -> None:
        """Change how it answers from now on (keys: those of `DEFAULT_SCRIPT`)."""
        unknown = set(changes) - set(DEFAULT_SCRIPT)
        if unknown:
            raise ValueError(f"unknown script keys: {sorted(unknown)}")
        with self._lock:
            self._script.update(changes)

    def current(self) -> dict[str, Any]:
        """Return the script now in force."""
        with self._lock:
            return dict(self._script)

    def reset(self) -> None:
        """Restore `DEFAULT_SCRIPT` and forget the requests received."""
        with self._lock:
            self._script = dict(DEFAULT_SCRIPT)
            self._requests.clear()

    def requests(self) -> list[dict[str, Any]]:
        """Return the model requests received, oldest first: `path`, `key` (the bearer), `body`, `started` …"""
        with self._lock:
            return [dict(entry) for entry in self._requests]

    def _record(self, entry: dict[str, Any]) -> int:
        """Keep a request's record; return how many model requests came so far (this one included)."""
        with self._lock:
            self._requests.append(entry)
            return len(self._requests)

    def _update(self, entry: dict[str, Any], **changes: Any) -> None:
        """Change a recorded request (its stream's progress)."""
        with self._lock:
            entry.update(changes)

    def _reported(self, entry: dict[str, Any], usage: dict[str, int]) -> None:
        with self._lock:
            entry["usage"] = usage


def _route(target: str) -> str:
    """Return a request's path without its query and its optional `/v1` (gateways take both)."""
    path = target.split("?")[0]
    return path.removeprefix("/v1") if path.startswith("/v1/") else path


def _handler(fake: FakeLLM) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _json(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> Any:
            length = int(self.headers.get("content-length") or 0)
            return json.loads(self.rfile.read(length) or b"{}")

        def do_GET(self) -> None:
            path = _route(self.path)
            if path == "/models":
                self._json(200, {"object": "list", "data": [{"id": "fake-model", "object": "model"}]})
            elif path == "/_control/requests":
                self._json(200, fake.requests())
            else:
                self._json(404, {"error": {"message": f"no route {path}"}})

        def do_POST(self) -> None:
            path = _route(self.path)
            body = self._body()
            if path == "/_control/script":
                fake.script(**body)
                self._json(200, fake.current())
                return
            if path == "/_control/reset":
                fake.reset()
                self._json(200, fake.current())
                return
            if path == "/messages/count_tokens":
                self._json(200, {"input_tokens": 10})
                return
            kind = {"/chat/completions": "chat", "/responses": "responses", "/messages": "messages"}.get(path)
            if kind is None:
                self._json(404, {"error": {"message": f"no route {path}"}})
                return
            key = self.headers.get("authorization") or self.headers.get("x-api-key") or ""
            entry = {
                "path": self.path.split("?")[0],
                "key": key.removeprefix("Bearer "),
                "body": body,
                "started": time.monotonic(),
                "traceparent": self.headers.get("traceparent"),
            }
            n = fake._record(entry)
            script = fake.current()
            usage = wire.varied_usage(n) if script["usage"] == "varied" else script["usage"] or wire.USAGE
            if script["fail_status"]:
                self._json(
                    script["fail_status"], {"error": {"type": "scripted_failure", "message": "scripted failure"}}
                )
                return
            reply = wire.decide(kind, body, script)
            if body.get("stream"):
                fake._update(entry, deltas=0, ended=None, outcome=None)
                try:
                    if not self._stream(kind, body, reply, script, entry, usage):
                        return
                except ConnectionError:
                    fake._update(entry, ended=time.monotonic(), outcome="broken")
                    raise
                fake._update(entry, ended=time.monotonic(), outcome="completed")
            else:
                self._json(200, wire.complete(kind, body.get("model", "fake-model"), reply, usage))
            fake._reported(entry, usage)

        def _stream(
            self,
            kind: str,
            body: dict[str, Any],
            reply: wire.Reply,
            script: dict[str, Any],
            entry: dict[str, Any],
            usage: dict[str, int],
        ) -> bool:
            """Stream the reply; return False if the client hung up before the event with its usage."""
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("cache-control", "no-cache")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            deltas = 0
            for event in wire.stream(kind, body.get("model", "fake-model"), reply, usage):
                if event is None:
                    deltas += 1
                    fake._update(entry, deltas=deltas)
                    time.sleep(script["delay"])
                    continue
                if wire.carries_usage(kind, event) and self._hung_up():
                    fake._update(entry, ended=time.monotonic(), outcome="broken")
                    return False
                self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            return True

        def _hung_up(self) -> bool:
            """Whether the client has closed its end (its next read would say so)."""
            connection: socket.socket = self.connection
            if not select.select([connection], [], [], 0)[0]:
                return False
            try:
                return connection.recv(1, socket.MSG_PEEK) == b""
            except OSError:
                return True

    return Handler


def main() -> None:
    """Serve on `--port` (default: a free one) until killed; print the URL first."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    fake = FakeLLM(args.port).start()
    print(fake.url, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
