"""The kit's pytest plugin (`lap_core.testing.pytest_plugin`) as a plugin author's test run sees it.

Each test writes a test module and runs pytest on it in a subprocess, loading the plugin with `-p`
(entry point autoloading off: once installed, the plugin loads itself, and `-p` would load it twice).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = "lap_core.testing.pytest_plugin"
KIT = ["--disable-plugin-autoload", "-p", PLUGIN, "-p", "anyio", "-p", "no:cacheprovider"]


@pytest.fixture
def kit(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester whose runs see this checkout (the LAP the plugin author has installed)."""
    pytester.makeini("[pytest]\nfilterwarnings = error\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return pytester


def test_the_fake_llm_is_scripted_per_test_and_speaks_each_api(kit: pytest.Pytester) -> None:
    kit.makepyfile(
        """
        import json

        import httpx

        BASH = {"type": "function", "function": {"name": "bash", "parameters": {
            "type": "object", "properties": {"command": {"type": "string"}}}}}

        def test_a_scripted_text_and_tool_call(lap_llm):
            lap_llm.script(text="hi there", command="ls")
            user = {"role": "user", "content": "go"}
            body = {"model": "any", "messages": [user], "tools": [BASH]}
            call = httpx.post(f"{lap_llm.url}/v1/chat/completions", json=body).json()
            assert json.loads(call["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]) == {
                "command": "ls"
            }
            with httpx.stream("POST", f"{lap_llm.url}/v1/responses", json={"model": "any", "input": "go",
                                                                          "stream": True}) as response:
                assert "response.output_text.delta" in response.read().decode()
            answer = httpx.post(f"{lap_llm.url}/v1/messages", json={"model": "claude-x", "messages": [user],
                                                                   "max_tokens": 10}).json()
            assert answer["content"] == [{"type": "text", "text": "hi there"}]
            assert [request["path"] for request in lap_llm.requests()] == [
                "/v1/chat/completions", "/v1/responses", "/v1/messages"]

        def test_the_next_test_gets_a_fresh_script(lap_llm):
            assert lap_llm.requests() == []
            assert lap_llm.current()["text"] == "FAKE-ANSWER"
        """
    )
    kit.runpytest_subprocess(*KIT).assert_outcomes(passed=2)


def test_the_environment_leads_to_a_fresh_data_dir_and_the_fake_llm(kit: pytest.Pytester) -> None:
    kit.makepyfile(
        """
        import stat

        def test_env(lap_env, lap_data_dir, lap_llm):
            assert stat.S_IMODE(lap_data_dir.stat().st_mode) == 0o711  # sandbox users traverse it
            assert lap_env["LAP_DATA_DIR"] == str(lap_data_dir)
            assert lap_env["LITELLM_API_BASE"] == lap_llm.url
            assert "HOME" not in lap_env  # not the developer's environment
        """
    )
    kit.runpytest_subprocess(*KIT).assert_outcomes(passed=1)


def test_lap_runs_the_plugins_under_test(kit: pytest.Pytester) -> None:
    kit.makepyfile(
        """
        import pytest

        from lap_core import Harness, HarnessSpec, TextDelta, TurnEnd, hookimpl

        pytestmark = pytest.mark.anyio


        class EchoHarness(Harness):
            async def run_turn(self, sandbox, turn):
                result = await sandbox.exec(["echo", turn.text])
                yield TextDelta(text=result.stdout)
                yield TurnEnd()


        class EchoPlugin:
            @hookimpl
            def lap_harnesses(self):
                yield HarnessSpec(name="echo", factory=EchoHarness)


        @pytest.fixture
        def anyio_backend():
            return "asyncio"


        @pytest.fixture
        def lap_plugins():
            return [EchoPlugin()]


        @pytest.fixture
        def lap_env(lap_env):
            return {**lap_env, "LAP_DEFAULT_MODEL": "fake-model"}


        async def test_lap(lap, lap_data_dir):
            assert lap.data_dir == lap_data_dir
            assert "echo" in lap.harnesses
            agent = await lap.agents.create("echoer", harness="echo", model=lap.settings.lap_default_model)
            assert (await lap.sessions.create(agent.id)).agent_id == agent.id
        """
    )
    kit.runpytest_subprocess(*KIT).assert_outcomes(passed=1)


def test_the_suites_need_only_what_they_test(kit: pytest.Pytester) -> None:
    kit.makepyfile(
        """
        from lap_core.testing import BackendConformance, HarnessConformance


        class TestMyHarness(HarnessConformance):
            harness = "mine"


        class TestMyBackend(BackendConformance):
            sandbox_backend = "mine"

            def test_the_backend_is_selected(self, lap_env):
                assert lap_env["LAP_SANDBOX_BACKEND"] == "mine"
        """
    )
    result = kit.runpytest_subprocess(*KIT, "--setup-plan", "-k", "text_turn or labels")
    result.assert_outcomes()
    result.stdout.fnmatch_lines(
        [
            "*SETUP    F lap (fixtures used: anyio_backend, lap_env, lap_plugins)",
            "*SETUP    F scripted_llm (*lap_llm)",
            "*SETUP    F lap_env (fixtures used: lap_env)",
            "*SETUP    F backend (fixtures used: lap)",
        ]
    )
    kit.runpytest_subprocess(*KIT, "-k", "selected").assert_outcomes(passed=1)


def test_the_entry_point_named_after_the_module_loads_it_once_however_asked(
    kit: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The `pytest11` entry point lap-core declares, as its installed distribution has it: named after the
    module, so that `-p lap_core.testing.pytest_plugin` and `pytest_plugins` find it loaded already."""
    dist = kit.mkdir("site") / "lap_kit-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lap-kit\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[pytest11]\n{PLUGIN} = {PLUGIN}\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(dist.parent), os.environ["PYTHONPATH"]]))
    kit.makepyfile("def test_it(lap_llm):\n    assert lap_llm.url\n")
    kit.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
    kit.runpytest_subprocess("-p", "no:cacheprovider", "-p", PLUGIN).assert_outcomes(passed=1)
    kit.makeconftest(f"pytest_plugins = [{PLUGIN!r}]\n")
    kit.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
