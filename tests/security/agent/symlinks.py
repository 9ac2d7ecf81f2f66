"""Finding 5: replace every entry of the sandbox's run directory (the host's `<data>/sandboxes/<name>/run`) the
host might open with a symlink to a host socket. The next turn must never connect there."""

import os

from kit import PARAMS, emit

TARGET = PARAMS["host_socket"]
RUN = "/run/lap"
planted, refused = [], []
names = set(os.listdir(RUN)) | {"sandboxd.sock", "sandboxd.token", "token", "meta.json", "info.json", "egress.sock"}
for name in sorted(names - {"state"}):  # sandboxd's own process output: replacing it would only break this turn
    path = os.path.join(RUN, name)
    try:
        if os.path.lexists(path):
            os.unlink(path)
        os.symlink(TARGET, path)
        planted.append(name)
    except OSError as error:
        refused.append(f"{name}: {type(error).__name__}")
emit("run_dir_symlinks_planted", True, f"planted {planted}; refused {refused}", planted=planted)
