"""A stand-in for the agent-sandbox controller (v1beta1) and a hostPath PV provisioner, for the k8s test tier.

    python -m tests.k8s.controller [--namespace NS ...] [--namespace-suffix=SUFFIX]

It serves all namespaces by default. Test sessions sharing the cluster each run their own, serving only
the namespaces that end with the session's suffix (tests/k8s/conftest.py).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from kubernetes_asyncio import client, config

from tests.k8s.controller.controller import Controller
from tests.k8s.controller.objects import log


async def main(namespaces: list[str], suffix: str) -> None:
    configuration = client.Configuration()
    await config.load_kube_config(client_configuration=configuration)  # from $KUBECONFIG
    async with client.ApiClient(configuration) as api:
        task = asyncio.create_task(Controller(api, namespaces, suffix).run())
        for signum in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(signum, task.cancel)
        log.info("serving %s%s", ", ".join(namespaces) or "all namespaces", f" ending with {suffix}" if suffix else "")
        try:
            await task
        except asyncio.CancelledError:
            log.info("stopped")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m tests.k8s.controller", description=__doc__.splitlines()[0])
    parser.add_argument("--namespace", action="append", default=[], help="a namespace to serve (repeatable)")
    parser.add_argument("--namespace-suffix", default="", help="serve only namespaces whose name ends with this")
    args = parser.parse_args()
    log_format = "%(asctime)s.%(msecs)03d %(message)s"
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=log_format, datefmt="%H:%M:%S")
    asyncio.run(main(args.namespace, args.namespace_suffix))
