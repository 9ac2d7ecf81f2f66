"""Finding 6: kill sandboxd (once per session) a moment after this tool call returns; the next turn must work."""

import os
import subprocess

from kit import LOOT, emit, pids, read

marker = os.path.join(LOOT, "killed-sandboxd")
daemons = [pid for pid in pids() if b"lap_sandboxd" in (read(f"/proc/{pid}/cmdline") or b"")]
if os.path.exists(marker) or not daemons:
    emit("sandboxd_kill_scheduled", bool(daemons), f"not again (sandboxd pids {daemons})")
else:
    open(marker, "w").close()
    subprocess.Popen(
        ["/bin/sh", "-c", f"sleep 2; kill -9 {' '.join(map(str, daemons))}"],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    emit("sandboxd_kill_scheduled", True, f"sandboxd pids {daemons} die in 2 s")
