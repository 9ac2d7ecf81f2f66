# syntax=docker/dockerfile:1
# A LAP sandbox image for one harness; the Kubernetes backend runs one pod per sandbox from it.
#
#   docker build -f deploy/sandbox.Dockerfile --build-arg HARNESS=opencode -t lap-sandbox-opencode:dev .
#
# HARNESS is opencode, claude-code or codex. The image has the layout every LAP backend gives a
# sandbox (lap_core.sandbox; plugins/lap-local/lap_local/bwrap.py builds the same one with
# bubblewrap): the workspace at /workspace, the harness's home at /home/agent (user `agent`,
# uid 1000), the harness CLI read-only under /opt/lap/harness/node_modules, sandboxd's socket
# and state under /run/lap. sandboxd (lap_sandboxd: the stdlib and msgspec only) runs on
# Debian's python3, as the agent, with tini as PID 1 to reap what agents leave behind.
#
# The npm pins below must equal the harness plugins' `npm_packages` (lap_opencode,
# lap_claude_code, lap_codex), and MSGSPEC_VERSION the msgspec of uv.lock:
# tests/deploy/test_deploy_files.py fails when they drift.

ARG DEBIAN_IMAGE=debian:bookworm-slim

# --- the harness CLI, installed by npm (only this stage has npm) ----------------------------------
FROM ${DEBIAN_IMAGE} AS harness
ARG HARNESS
ARG OPENCODE_PACKAGE=opencode-ai@1.18.33
ARG CLAUDE_CODE_PACKAGE=@anthropic-ai/claude-code@2.1.197
ARG CODEX_PACKAGE=@openai/codex@0.169.0
# Debian's packages, unpinned on purpose: a point release replaces the pinned version in the archive.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates nodejs npm \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/lap/harness
# The same install as `lap harness install` (lap_core/_install.py), marker file included. The
# package variables carry their pinned versions, which hadolint cannot see through.
# hadolint ignore=DL3016
RUN case "${HARNESS}" in \
      opencode) package="${OPENCODE_PACKAGE}" ;; \
      claude-code) package="${CLAUDE_CODE_PACKAGE}" ;; \
      codex) package="${CODEX_PACKAGE}" ;; \
      *) echo "HARNESS must be opencode, claude-code or codex, got '${HARNESS}'" >&2; exit 1 ;; \
    esac \
 && printf '{"name": "lap-harness", "private": true}\n' > package.json \
 && npm install --no-audit --no-fund --no-update-notifier "${package}" \
 && npm cache clean --force \
 && printf '%s\n' "${package}" > .lap-installed

# --- sandboxd's one dependency, for Debian's python3 ----------------------------------------------
FROM ${DEBIAN_IMAGE} AS sandboxd
ARG MSGSPEC_VERSION=0.22.0
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-pip \
 && rm -rf /var/lib/apt/lists/*
# --target installs beside the system's packages, not into them (PEP 668 allows it).
RUN pip install --no-cache-dir --target /opt/lap/python "msgspec==${MSGSPEC_VERSION}"
COPY lap_sandboxd /opt/lap/python/lap_sandboxd
RUN python3 -m compileall -q /opt/lap/python/lap_sandboxd

# --- the sandbox ----------------------------------------------------------------------------------
FROM ${DEBIAN_IMAGE}
ARG HARNESS
LABEL io.lap.harness="${HARNESS}" \
      org.opencontainers.image.title="lap-sandbox-${HARNESS}" \
      org.opencontainers.image.description="LAP sandbox with the ${HARNESS} harness and sandboxd" \
      org.opencontainers.image.licenses="Apache-2.0"
# What coding agents expect to find: git, ripgrep, a shell, TLS roots; nodejs runs the CLIs
# that are JavaScript (codex's launcher); python3 runs sandboxd.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends bash ca-certificates git nodejs procps python3 ripgrep tini \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --gid 1000 agent \
 && useradd --uid 1000 --gid 1000 --home-dir /home/agent --create-home --shell /bin/bash agent \
 && mkdir -p /workspace /run/lap/state \
 && chown agent:agent /workspace /run/lap /run/lap/state
COPY --from=sandboxd /opt/lap/python /opt/lap/python
# Debian's python3 reads .pth files here, so `python3 -I -m lap_sandboxd` finds sandboxd and msgspec.
RUN mkdir -p /usr/lib/python3/dist-packages \
 && echo /opt/lap/python > /usr/lib/python3/dist-packages/lap-sandboxd.pth
COPY --from=harness /opt/lap/harness /opt/lap/harness
ENV HOME=/home/agent \
    USER=agent \
    LANG=C.UTF-8 \
    PATH=/opt/lap/harness/node_modules/.bin:/usr/local/bin:/usr/bin:/bin
USER 1000:1000
WORKDIR /workspace
# sandboxd's API (bearer token from LAP_SANDBOXD_TOKEN, which it removes from its environment).
EXPOSE 7000
ENTRYPOINT ["/usr/bin/tini", "--"]
# The Kubernetes backend sets the pod's args (keep `command` unset so tini stays PID 1). This
# default needs LAP_SANDBOXD_TOKEN and LAP_VAULT_ADDRESS (the vault's HOST:PORT, e.g.
# lap-vault.lap.svc:4001), which tools inside reach as http://127.0.0.1:4000 (the LLM proxy) and
# http://127.0.0.1:3128 (the egress gateway, their HTTP(S) proxy).
CMD ["/bin/sh", "-c", "exec python3 -I -B -m lap_sandboxd --socket /run/lap/sandboxd.sock --state /run/lap/state --listen 0.0.0.0:7000 --egress \"127.0.0.1:4000=${LAP_VAULT_ADDRESS:?LAP_VAULT_ADDRESS must be the vault HOST:PORT}\" --egress \"127.0.0.1:3128=${LAP_VAULT_ADDRESS}\""]
