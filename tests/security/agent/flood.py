"""Finding 4: 16 connections, each sending a 30 MiB body to the proxy at once. The host measures its memory."""

import socket
import threading
import time

from kit import PARAMS, PROXY, STUB, emit, http

CONNECTIONS, SIZE, CHUNK = PARAMS["connections"], PARAMS["mib"] * 1024 * 1024, 1024 * 1024
# An unfinished JSON document: the gateway refuses it, so no model is ever called with it.
head = b'{"model": "fake-model", "messages": [{"role": "user", "content": "'
chunk = b"A" * CHUNK
outcomes = []


def flood():
    sent, status = 0, None
    try:
        with socket.create_connection(PROXY, timeout=10) as sock:
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Authorization: Bearer {STUB}\r\nContent-Length: {SIZE}\r\n\r\n".encode()
                + head
            )
            sent = len(head)
            deadline = time.monotonic() + PARAMS["seconds"]
            while sent < SIZE and time.monotonic() < deadline:
                piece = chunk[: SIZE - sent]
                sock.sendall(piece)
                sent += len(piece)
            sock.settimeout(5)
            answer = sock.recv(64)
            status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.") else None
            outcomes.append((sent, status, ""))
    except OSError as error:
        outcomes.append((sent, status, type(error).__name__))


threads = [threading.Thread(target=flood) for _ in range(CONNECTIONS)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
sent = sum(s for s, _, _ in outcomes) // (1024 * 1024)
statuses = sorted({str(status or error) for _, status, error in outcomes})
emit("proxy_flood_sent", True, f"{len(outcomes)} connections sent {sent} MiB; answers {statuses}", mib=sent)
status = http("GET", "/v1/models", [("Authorization", f"Bearer {STUB}")])[0]
emit("proxy_serves_after_flood", status == 200, f"/v1/models after the flood: {status}")
