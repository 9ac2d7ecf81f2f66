"""A small internet for the egress tests: HTTPS servers on loopback under test host names.

`Internet` is a CA of its own (the gateway is told to trust it: `LAP_EGRESS_TRUST`) and serves,
each on a port of 127.0.0.1 with a certificate for its name (the gateway's resolver pins the names
to 127.0.0.1: `LAP_EGRESS_HOSTS`):
- a git smart-HTTP server: the real `git http-backend` behind a CGI handler, repositories that may
  require HTTP Basic credentials (a token as the password, as GitHub takes it);
- a package index (PEP 503 simple pages) with wheels made on the spot, for a real `pip`;
- a plain file server (large downloads, for bench/egress.py);
- an echo server that answers each request with what it received (as httpbin's `/anything` does),
  over HTTPS or plain HTTP.
Every request each server receives is recorded, credentials included, so tests can tell what left
the gateway.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import subprocess
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, ClassVar

from lap_core._egress.certificates import Authority

if TYPE_CHECKING:
    import ssl
    from pathlib import Path

__all__ = ["Internet", "Site"]


class Site:
    """One HTTPS server: its name, port and the requests it received."""

    def __init__(self, name: str, server: ThreadingHTTPServer, *, tls: bool = True) -> None:
        self.name = name
        self.server = server
        self.tls = tls
        self.requests: list[dict[str, Any]] = server.requests  # type: ignore[attr-defined]

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.name}:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK wait
    site: ClassVar[dict[str, Any]] = {}

    def log_message(self, *args: object) -> None:
        pass

    def _record(self, body: bytes = b"") -> dict[str, Any]:
        headers = {k.lower(): v for k, v in self.headers.items()}
        request = {"method": self.command, "path": self.path, "headers": headers}
        self.server.requests.append(request)  # type: ignore[attr-defined]
        return request

    def _send(
        self, status: int, body: bytes, content_type: str = "text/plain", extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class _GitHandler(_Handler):
    """`git http-backend` as CGI; repositories in `root`, each maybe needing a token (`tokens`)."""

    root: ClassVar[Path]
    tokens: ClassVar[dict[str, str]] = {}

    def _git(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        self._record(body)
        path, _, query = self.path.partition("?")
        repo = path.strip("/").split("/", 1)[0]
        wanted = self.tokens.get(repo)
        if wanted is not None:
            given = self.headers.get("authorization", "")
            ok = given.startswith("Basic ") and base64.b64decode(given[6:]).decode().partition(":")[2] == wanted
            if not ok:
                self._send(401, b"credentials needed\n", extra={"www-authenticate": 'Basic realm="git"'})
                return
        env = {
            "PATH": os.environ["PATH"],
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("content-type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": "tester",
            "REMOTE_ADDR": "127.0.0.1",
            "GIT_HTTP_MAX_REQUEST_BUFFER": "100M",
        }
        if self.headers.get("content-encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["content-encoding"]
        if self.headers.get("git-protocol"):
            env["GIT_PROTOCOL"] = self.headers["git-protocol"]
        result = subprocess.run(
            ["git", "http-backend"], input=body, env=env, capture_output=True, check=False, timeout=120
        )
        head, _, payload = result.stdout.partition(b"\r\n\r\n")
        status, headers = 200, {}
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(": ")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers[name] = value
        content_type = headers.pop("Content-Type", "application/octet-stream")
        self._send(status, payload, content_type, headers)

    do_GET = do_POST = _git


class _FilesHandler(_Handler):
    """Serves `files` (path -> bytes)."""

    files: ClassVar[dict[str, bytes]] = {}

    def do_GET(self) -> None:
        self._record()
        body = self.files.get(self.path.split("?")[0])
        if body is None:
            self._send(404, b"not found\n")
        else:
            kind = "text/html" if self.path.endswith("/") else "application/octet-stream"
            self._send(200, body, kind)

    do_HEAD = do_GET


class _EchoHandler(_Handler):
    """Answers every request with what it received: method, target and headers, as JSON."""

    def _echo(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        request = self._record(self.rfile.read(length) if length else b"")
        self._send(200, json.dumps(request).encode(), "application/json")

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _echo


def wheel(name: str, version: str, module: str) -> tuple[str, bytes]:
    """Return the file name and bytes of a minimal wheel holding one module."""
    dist = f"{name.replace('-', '_')}-{version}"
    files = {
        f"{name.replace('-', '_')}.py": module.encode(),
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: lap-tests\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = "".join(
        f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}\n"
        for path, data in files.items()
    )
    files[f"{dist}.dist-info/RECORD"] = (record + f"{dist}.dist-info/RECORD,,\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return f"{dist}-py3-none-any.whl", buffer.getvalue()


class Internet:
    """The test internet: a CA and the sites it has certificates for."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ca = Authority.load(directory / "ca")
        self.ca_file = directory / "internet-ca.pem"
        self.ca_file.write_bytes(self.ca.cert_pem)
        self.sites: list[Site] = []

    def _serve(self, name: str, handler: type[_Handler], *, tls: bool = True) -> Site:
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        server.requests = []  # type: ignore[attr-defined]
        if tls:
            context: ssl.SSLContext = self.ca.context_for(name)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        site = Site(name, server, tls=tls)
        self.sites.append(site)
        return site

    def git(self, name: str, repos: dict[str, dict[str, str]], tokens: dict[str, str] | None = None) -> Site:
        """Serve git repositories (repo -> {path: content}, one commit each); `tokens`: repo -> the token it needs."""
        root = self.directory / f"git-{name}"
        for repo, files in repos.items():
            work = self.directory / f"work-{name}-{repo}"
            work.mkdir(parents=True)
            for path, content in files.items():
                (work / path).parent.mkdir(parents=True, exist_ok=True)
                (work / path).write_text(content)
            env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t"}
            env["GIT_COMMITTER_EMAIL"] = "t@t"
            for argv in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-q", "-m", "first"]):
                subprocess.run(["git", *argv], cwd=work, env=env, check=True)
            subprocess.run(["git", "clone", "-q", "--bare", str(work), str(root / repo)], check=True)
        handler = type("GitHandler", (_GitHandler,), {"root": root, "tokens": dict(tokens or {})})
        return self._serve(name, handler)

    def index(self, name: str, packages: dict[str, str]) -> Site:
        """Serve a PEP 503 index of packages (name -> the module's source), each version 1.0."""
        files: dict[str, bytes] = {}
        links = []
        for package, module in packages.items():
            filename, data = wheel(package, "1.0", module)
            digest = hashlib.sha256(data).hexdigest()
            files[f"/files/{filename}"] = data
            files[f"/simple/{package}/"] = f'<a href="/files/{filename}#sha256={digest}">{filename}</a>'.encode()
            links.append(f'<a href="/simple/{package}/">{package}</a>')
        files["/simple/"] = "".join(links).encode()
        return self._serve(name, type("IndexHandler", (_FilesHandler,), {"files": files}))

    def files(self, name: str, files: dict[str, bytes]) -> Site:
        """Serve files (path -> bytes)."""
        return self._serve(name, type("FilesHandler", (_FilesHandler,), {"files": dict(files)}))

    def echo(self, name: str, *, tls: bool = True) -> Site:
        """Serve an echo of every request (over plain HTTP with `tls=False`)."""
        return self._serve(name, _EchoHandler, tls=tls)

    def env(self) -> dict[str, str]:
        """The settings that make a LAP's gateway find and trust these sites."""
        hosts = ",".join(sorted({f"{site.name}=127.0.0.1" for site in self.sites}))
        return {"LAP_EGRESS_HOSTS": hosts, "LAP_EGRESS_TRUST": str(self.ca_file)}

    def stop(self) -> None:
        for site in self.sites:
            site.stop()
