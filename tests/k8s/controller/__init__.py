"""A stand-in for the agent-sandbox controller (v1beta1) and a hostPath PV provisioner, for the k8s test tier.

The real controller (kubernetes-sigs/agent-sandbox) cannot be built here. This one follows its v1beta1
contract as /work/shared/agent-sandbox.md records it: Sandbox -> Pod (+ headless Service, + PVCs),
SandboxWarmPool -> unclaimed Sandboxes, SandboxClaim -> an adopted warm Sandbox or a cold one. It is
level-triggered: a watch event queues the key of the object it concerns, and one worker per kind
reconciles from the API server's current state (no cache: a reconcile never acts on a stale read).

Run it with `python -m tests.k8s.controller` (__main__.py). objects.py holds the API's names and the
helpers on its JSON objects; plumbing.py the API calls, the watches and the work queues; sandbox.py,
pools.py (SandboxWarmPool and SandboxClaim) and provisioner.py the reconcilers; controller.py puts
them together.
"""

from tests.k8s.controller.objects import (
    CLAIM_UID_LABEL,
    CLAIMS,
    GROUP,
    GROUPS,
    HASH_LABEL,
    LAUNCH_TYPE_LABEL,
    MERGE_PATCH,
    POOLS,
    PV_ROOT,
    SANDBOX_NAME_ANNOTATION,
    SANDBOXES,
    TEMPLATES,
    VERSION,
    WARM_POOL_LABEL,
    controller_of,
    find_condition,
    is_ready,
    name_hash,
    or_none,
)

__all__ = [
    "CLAIMS",
    "CLAIM_UID_LABEL",
    "GROUP",
    "GROUPS",
    "HASH_LABEL",
    "LAUNCH_TYPE_LABEL",
    "MERGE_PATCH",
    "POOLS",
    "PV_ROOT",
    "SANDBOXES",
    "SANDBOX_NAME_ANNOTATION",
    "TEMPLATES",
    "VERSION",
    "WARM_POOL_LABEL",
    "controller_of",
    "find_condition",
    "is_ready",
    "name_hash",
    "or_none",
]
