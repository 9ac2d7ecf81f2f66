"""Finding 7: write 200 MiB into the workspace under a 64 MiB disk limit: the write must stop at about the limit
with ENOSPC (or EDQUOT). The file stays, so the host can measure what it took."""

import errno
import os

from kit import PARAMS, emit

CHUNK = b"\0" * (1024 * 1024)
written, failure = 0, None
fd = os.open("/workspace/disk-filler", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
try:
    while written < PARAMS["mib"] * len(CHUNK):
        written += os.write(fd, CHUNK)
        if written % (16 * len(CHUNK)) == 0:
            os.fsync(fd)  # so the space is taken now, not when the host looks
    os.fsync(fd)
except OSError as error:
    failure = errno.errorcode.get(error.errno, str(error.errno))
finally:
    os.close(fd)
mib = written // len(CHUNK)
limit = PARAMS["limit_mib"]
held = failure in ("ENOSPC", "EDQUOT") and mib <= limit + 16
emit(
    "workspace_write_stops_at_disk_limit",
    held,
    f"wrote {mib} MiB, then {failure or 'no error'}",
    mib=mib,
    error=failure,
)
