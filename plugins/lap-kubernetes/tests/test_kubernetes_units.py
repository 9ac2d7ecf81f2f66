"""The Kubernetes backend's error paths that a real cluster rarely shows: 410 Gone on a watch,
claim terminal reasons, conflicting creates, names and labels Kubernetes would refuse. The
cluster tier (tests/k8s) runs the rest against a real API server."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from lap_core import SandboxContext, SandboxError, SandboxSpec
from lap_kubernetes import KubernetesBackend, KubernetesSettings, manifests
from lap_kubernetes.backend import _state
from lap_kubernetes.warm import TERMINAL_REASONS, claim_state
from lap_kubernetes.watching import states

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio


class _Stream:
    """A watch response: newline-separated JSON events, then the end of the stream."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.content = self
        self._lines = [json.dumps(event).encode() + b"\n" for event in events]

    async def readline(self) -> bytes:
        return self._lines.pop(0) if self._lines else b""

    def close(self) -> None:
        pass

    def release(self) -> None:
        pass


def _obj(version: str, ready: str = "False") -> dict[str, Any]:
    return {
        "metadata": {"name": "s", "resourceVersion": version},
        "status": {"conditions": [{"type": "Ready", "status": ready}]},
    }


async def test_a_watch_that_gets_410_gone_starts_over_from_a_fresh_read() -> None:
    reads = iter([_obj("1"), _obj("7")])
    watches: list[str] = []
    streams = iter(
        [
            [{"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}}],
            [{"type": "MODIFIED", "object": _obj("8", ready="True")}],
        ]
    )

    async def get() -> dict[str, Any] | None:
        return next(reads)

    async def list_things(*, resource_version: str | None = None, watch: bool = False, **_: Any) -> Any:
        assert watch, "only the watch lists here: the object exists"
        assert resource_version is not None
        watches.append(resource_version)
        return _Stream(next(streams))

    seen = []
    async for obj in states(get, list_things, name="s"):
        assert obj is not None
        seen.append((obj["metadata"]["resourceVersion"], _state(obj)[0]))
        if _state(obj)[0] == "ready":
            break
    # Read at 1, watched from 1, 410 -> read again (7), watched from 7, then the change at 8.
    assert seen == [("1", "starting"), ("7", "starting"), ("8", "ready")]
    assert watches == ["1", "7"]


async def test_a_watch_for_an_absent_object_starts_at_the_lists_version_and_sees_deletions() -> None:
    calls: list[dict[str, Any]] = []

    async def get() -> dict[str, Any] | None:
        return None

    async def list_things(*, watch: bool = False, **kwargs: Any) -> Any:
        calls.append({"watch": watch, **kwargs})
        if not watch:
            return {"metadata": {"resourceVersion": "42"}, "items": []}
        return _Stream([{"type": "ADDED", "object": _obj("43")}, {"type": "DELETED", "object": _obj("44")}])

    seen = []
    async for obj in states(get, list_things, name="s"):
        seen.append(obj and obj["metadata"]["resourceVersion"])
        if len(seen) == 3:
            break
    assert seen == [None, "43", None]
    assert calls[0]["field_selector"] == "metadata.name=s"
    assert calls[1]["resource_version"] == "42"


async def test_other_watch_errors_are_raised() -> None:
    async def get() -> dict[str, Any] | None:
        return _obj("1")

    async def list_things(**_: Any) -> Any:
        return _Stream(
            [{"type": "ERROR", "object": {"kind": "Status", "code": 403, "reason": "Forbidden", "message": "no"}}]
        )

    with pytest.raises(ApiException) as caught:
        async for _ in states(get, list_things, name="s"):
            pass
    assert caught.value.status == 403


@pytest.mark.parametrize("reason", sorted(TERMINAL_REASONS))
def test_terminal_claim_reasons_fail_the_claim(reason: str) -> None:
    claim = {"status": {"conditions": [{"type": "Ready", "status": "False", "reason": reason, "message": "m"}]}}
    assert claim_state(claim) == ("failed", f"{reason}: m")


@pytest.mark.parametrize("reason", ["SandboxNotReady", "SandboxMissing", "SandboxCreatePending", "ReconcilerError"])
def test_transient_claim_reasons_keep_waiting(reason: str) -> None:
    claim = {"status": {"conditions": [{"type": "Ready", "status": "False", "reason": reason}]}}
    assert claim_state(claim)[0] == "starting"


def test_a_claim_is_ready_only_with_its_sandbox_named() -> None:
    ready = [{"type": "Ready", "status": "True"}]
    assert claim_state({"status": {"conditions": ready}})[0] == "starting"
    assert claim_state({"status": {"conditions": ready, "sandbox": {"name": "lap-codex-x1y2z"}}}) == ("ready", "")
    assert claim_state({})[0] == "starting"


@pytest.mark.parametrize(
    ("status", "spec", "state"),
    [
        ({"conditions": [{"type": "Ready", "status": "True"}]}, {}, "ready"),
        ({"conditions": [{"type": "Ready", "status": "False", "reason": "DependenciesNotReady"}]}, {}, "starting"),
        ({"conditions": [{"type": "Ready", "status": "False", "reason": "PodFailed"}]}, {}, "stopped"),
        ({"conditions": [{"type": "Ready", "status": "False", "reason": "SandboxExpired"}]}, {}, "stopped"),
        # The Suspended condition stays after a resume: the spec and Ready decide.
        ({"conditions": [{"type": "Suspended", "status": "True"}]}, {"operatingMode": "Suspended"}, "suspended"),
        ({}, {}, "starting"),
    ],
)
def test_sandbox_states(status: dict[str, Any], spec: dict[str, Any], state: str) -> None:
    assert _state({"metadata": {"name": "s"}, "spec": spec, "status": status})[0] == state


def test_a_sandbox_being_deleted_is_stopped() -> None:
    obj = {"metadata": {"name": "s", "deletionTimestamp": "2026-12-05T12:00:00Z"}, "status": {}}
    assert _state(obj) == ("stopped", "being deleted")


@pytest.mark.parametrize("name", ["Lap-1", "lap_1", "-lap", "x" * 64, ""])
def test_names_kubernetes_refuses_are_refused_first(name: str) -> None:
    with pytest.raises(SandboxError, match="DNS label"):
        manifests.check_name(name)


def test_label_values_are_made_valid_and_the_exact_ones_kept() -> None:
    # Ids may end in '_' (one in 37 does), which a label value may not.
    assert manifests.label_value("ses_01jabc") == "ses_01jabc"
    odd = manifests.label_value("ses_nmpqzvtvlcn0vodkdem_")
    assert odd.startswith("ses_nmpqzvtvlcn0vodkdem-")
    assert manifests._LABEL_VALUE.match(odd)
    assert odd != manifests.label_value("ses_nmpqzvtvlcn0vodkdem.")
    assert manifests._LABEL_VALUE.match(manifests.label_value("has space " + "y" * 80))
    sandbox = manifests.sandbox("lap-x", {"lap.session": "ses_a_"}, {})
    assert manifests._LABEL_VALUE.match(sandbox["metadata"]["labels"]["lap.session"])
    assert json.loads(sandbox["metadata"]["annotations"][manifests.ORIGINAL_LABELS]) == {"lap.session": "ses_a_"}


def test_volume_claim_names_are_dns_safe_and_distinct() -> None:
    names = {manifests.volume_claim_name(volume) for volume in ("ses_01ABC", "ses_01abc", "SES-01ABC", "__")}
    assert len(names) == 4
    assert all(len(name) <= 63 and manifests._DNS_LABEL.match(name) for name in names)


def test_the_pod_runs_unprivileged_and_reaches_only_the_vault() -> None:
    pod = manifests.pod_spec(
        image="img",
        pull_policy="Never",
        token_secret_name="lap-x",
        vault="lap-vault.lap.svc:4001",
        volume_claim_name="lap-vol-x",
        memory_mb=512,
        cpu=None,
        runtime_class="gvisor",
    )
    (container,) = pod["containers"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["runtimeClassName"] == "gvisor"
    for each in (container, pod["initContainers"][0]):
        context = each["securityContext"]
        assert (context["runAsNonRoot"], context["runAsUser"]) == (True, 1000)
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
    assert "127.0.0.1:4000=lap-vault.lap.svc:4001" in container["args"]
    token = next(env for env in container["env"] if env["name"] == "LAP_SANDBOXD_TOKEN")
    assert token["valueFrom"]["secretKeyRef"] == {"name": "lap-x", "key": "token"}
    assert "value" not in token  # never in the pod spec itself
    assert container["resources"]["limits"] == {"memory": "512Mi"}


def _backend(tmp_path: Path, **settings: Any) -> KubernetesBackend:
    context = SandboxContext(data_dir=tmp_path, vault_url="http://lap-vault.lap.svc:4001")
    return KubernetesBackend(KubernetesSettings(**settings), context=context)


def test_the_backend_needs_the_vault_url(tmp_path: Path) -> None:
    with pytest.raises(SandboxError, match="LAP_VAULT_URL"):
        KubernetesBackend(KubernetesSettings(), context=SandboxContext(data_dir=tmp_path))


class _Api:
    """Answers the backend's API calls from a script; records them."""

    def __init__(self, **answers: Any) -> None:
        self.answers = answers
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        async def call(*args: Any, **_: Any) -> Any:
            self.calls.append((name, args))
            answer = self.answers.get(name)
            if isinstance(answer, list):
                answer = answer.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer

        return call


class _Fake(KubernetesBackend):
    def __init__(self, tmp_path: Path, core: _Api, custom: _Api) -> None:
        super().__init__(KubernetesSettings(), context=SandboxContext(data_dir=tmp_path, vault_url="http://v:1"))
        self._core, self._custom = core, custom

    @property
    def core(self) -> Any:
        return self._core

    @property
    def custom(self) -> Any:
        return self._custom

    @property
    def api_client(self) -> Any:
        class Serializer:
            @staticmethod
            def sanitize_for_serialization(obj: Any) -> Any:
                return obj

        return Serializer()


def _conflict() -> ApiException:
    return ApiException(status=409, reason="Conflict")


async def test_a_sandbox_created_by_another_worker_at_the_same_moment_is_the_same_sandbox(tmp_path: Path) -> None:
    theirs = {"metadata": {"name": "lap-s1", "uid": "u1", "labels": {"lap.session": "s1"}}, "status": {}}
    token = {"metadata": {"name": "lap-s1"}, "stringData": {"token": "t" * 40}}
    core = _Api(
        list_namespaced_persistent_volume_claim={"items": [{"metadata": {"name": "lap-vol-s1"}}]},
        create_namespaced_secret=_conflict(),  # its token is there already
        read_namespaced_secret=token,
    )
    # Not there when we look; AlreadyExists when we create it: the other worker's.
    custom = _Api(
        get_namespaced_custom_object=[ApiException(status=404), theirs],
        create_namespaced_custom_object=_conflict(),
    )
    backend = _Fake(tmp_path, core, custom)
    ref = await backend.create(SandboxSpec(name="lap-s1", harness="codex", volume="s1", labels={"lap.session": "s1"}))
    assert (ref.name, ref.state, ref.labels) == ("lap-s1", "starting", {"lap.session": "s1"})
    assert [name for name, _ in custom.calls].count("create_namespaced_custom_object") == 1


async def test_other_api_errors_say_what_was_being_done(tmp_path: Path) -> None:
    refused = ApiException(status=403, reason="Forbidden")
    refused.body = json.dumps({"message": 'sandboxes.agents.x-k8s.io is forbidden: User "lap" cannot create'})
    core = _Api(
        list_namespaced_persistent_volume_claim={"items": [{"metadata": {"name": "lap-vol-s1"}}]},
        create_namespaced_secret={"metadata": {"name": "lap-s1"}, "stringData": {"token": "t" * 40}},
    )
    custom = _Api(get_namespaced_custom_object=ApiException(status=404), create_namespaced_custom_object=refused)
    backend = _Fake(tmp_path, core, custom)
    with pytest.raises(SandboxError, match=r"refused creating sandbox lap-s1: 403 sandboxes.* cannot create"):
        await backend.create(SandboxSpec(name="lap-s1", harness="codex", volume="s1"))


async def test_a_failed_claim_fails_wait_ready_at_once_with_its_reason(tmp_path: Path) -> None:
    failed = {
        "metadata": {"name": "lap-s1", "resourceVersion": "5"},
        "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "WarmPoolNotFound", "message": "no"}]},
    }
    custom = _Api(get_namespaced_custom_object=failed)
    backend = _Fake(tmp_path, _Api(), custom)
    backend.warm.size = 1
    with pytest.raises(SandboxError, match="the claim of sandbox lap-s1 failed: WarmPoolNotFound: no"):
        await backend.wait_ready("lap-s1", timeout=5)


def test_team_namespaces(tmp_path: Path) -> None:
    assert _backend(tmp_path).team_namespace("red") == "lap-sandboxes"  # per-team is off
    per_team = _backend(tmp_path, lap_k8s_namespace_per_team="lap-{team}")
    assert per_team.team_namespace("red") == "lap-red"
    assert per_team.team_namespace(None) == "lap-sandboxes"
    odd = per_team.team_namespace("team_01ABC")  # not a DNS label as it is: readable + a hash
    assert odd.startswith("lap-team-01abc-")
    assert manifests.is_dns_label(odd)
    assert odd != per_team.team_namespace("team_01abc")


@pytest.mark.parametrize(
    "failure",
    [aiohttp.ClientConnectionError("Cannot connect to host 10.0.0.1:443"), TimeoutError(), ConnectionResetError(104)],
)
async def test_an_api_server_out_of_reach_is_a_sandbox_error(tmp_path: Path, failure: Exception) -> None:
    # The reconciler and the engine handle LAP's errors; a raw client error would end the worker.
    backend = _Fake(tmp_path, _Api(), _Api(get_namespaced_custom_object=failure))
    with pytest.raises(SandboxError, match="Kubernetes did not answer while reading sandbox lap-s1"):
        await backend.status("lap-s1")
    backend = _Fake(tmp_path, _Api(), _Api(list_namespaced_custom_object=failure))
    with pytest.raises(SandboxError, match="while listing sandboxes"):
        await backend.list()
