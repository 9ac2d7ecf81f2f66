"""Two commands on a fresh machine: `bin/setup` installs what every test tier needs, then `bin/test` runs them."""

from __future__ import annotations

import re

from tests.deploy.files import ROOT, run, tool

SETUP, CI = ROOT / "bin/setup", ROOT / ".ci/run"
TIER_INSTALLERS = ("tests/k8s/cluster/install-deps.sh", "tests/deploy/install-tools.sh")


def _commands(script: str) -> str:
    return "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("#"))


def test_setup_runs_each_tier_installer_and_ci_does_not_run_them_again() -> None:
    setup, ci = _commands(SETUP.read_text()), _commands(CI.read_text())
    for installer in TIER_INSTALLERS:
        assert installer in setup
        assert installer not in ci
    assert re.search(r"^bin/setup$", ci, re.MULTILINE)


def test_the_readme_says_setup_then_test_and_nothing_else() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "```sh\nbin/setup\nbin/test\n```" in readme
    for installer in TIER_INSTALLERS:
        assert installer not in readme


def test_shellcheck_passes_on_setup_test_and_ci() -> None:
    scripts = [SETUP, ROOT / "bin/test", CI, *(ROOT / installer for installer in TIER_INSTALLERS)]
    result = run([tool("shellcheck"), *map(str, scripts)])
    assert result.returncode == 0, result.stdout + result.stderr
