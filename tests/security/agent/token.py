"""Finding 6: sandboxd's token. No agent process may read it (environments, command lines, files, memory) or
replace it through sandboxd's API (`PUT /token`) on any socket or port it can reach."""

import json
import os
import secrets

from kit import LOOT, emit, environ_of, http, listening_tcp, pids, read, scan, secrets_in, unix_sockets, walk

NAME = b"LAP_SANDBOXD_TOKEN"
token = ""  # the value, if a probe finds it (never printed)
places = []
for pid in pids():
    if NAME.decode() in environ_of(pid):
        places.append(f"/proc/{pid}/environ names it")
        token = token or environ_of(pid)[NAME.decode()]
    if NAME in (read(f"/proc/{pid}/cmdline") or b""):
        places.append(f"/proc/{pid}/cmdline names it")
files = [f"/proc/{pid}/{kind}" for pid in pids() for kind in ("environ", "cmdline")]
files += [path for top in ("/run", os.path.expanduser("~"), "/workspace", "/tmp") for path in walk(top)]
found = scan(files)
places += [f"{label} in {path}" for label, path in found.items()]
emit("sandboxd_token_unreadable", not places, "; ".join(places) or f"{len(files)} places, no token")


def memory_of(pid, budget=256 * 1024 * 1024):
    """The writable private memory of a process (heap, stacks, anonymous maps), as far as it can be read."""
    chunks = []
    try:
        with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
            for line in maps:
                fields = line.split()
                if not fields[1].startswith("rw") or (len(fields) > 5 and not fields[5].startswith("[")):
                    continue
                start, end = (int(x, 16) for x in fields[0].split("-"))
                if end - start > budget:
                    continue
                try:
                    mem.seek(start)
                    chunks.append(mem.read(end - start))
                    budget -= end - start
                except OSError:
                    continue
    except OSError:
        return b""
    return b"".join(chunks)


in_memory = []
for pid in pids():
    if pid != os.getpid() and (labels := secrets_in(memory_of(pid))):
        in_memory.append(f"{labels} in /proc/{pid}/mem")
emit("sandboxd_token_not_in_readable_memory", not in_memory, "; ".join(in_memory) or "no readable memory holds it")

# Replace it wherever sandboxd's API can be reached: with the token if found, else with none.
new_token = secrets.token_urlsafe(24)
body = json.dumps({"token": new_token}).encode()
headers = [("Authorization", f"Bearer {token}")] if token else []
replaced, tried = [], []
for address in unix_sockets() + [(host, port) for host, port in listening_tcp()]:
    status, answer, error = http(
        "PUT", "/token", [*headers, ("Content-Type", "application/json")], body, address=address, timeout=3
    )
    tried.append(f"{address}: {status or error}")
    if status == 200:
        replaced.append(str(address))
with open(os.path.join(LOOT, "replaced-token"), "w") as marker:
    marker.write("yes" if replaced else "no")
emit(
    "sandboxd_token_not_replaceable",
    not replaced,
    f"replaced at {replaced}" if replaced else "; ".join(tried),
    token_known=bool(token),
)
