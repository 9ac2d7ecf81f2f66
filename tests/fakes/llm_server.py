"""The scripted fake LLM of LAP's tests: the kit's (`lap_core.testing.FakeLLM`).

`python -m tests.fakes.llm_server --port N` runs it in a process of its own.
"""

from lap_core.testing.fake_llm import DEFAULT_SCRIPT, FakeLLM, main

__all__ = ["DEFAULT_SCRIPT", "FakeLLM", "main"]

if __name__ == "__main__":
    main()
