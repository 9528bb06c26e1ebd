"""The suite's own guards: the canary guard (N5) and vectors that may not go missing under CI.

The canary guard catches a leak wherever a handler or a terminal would show it. Each case runs a
small test file in an inner pytest session with the guard loaded and checks that the leak fails it
(an error at teardown, where the guard looks); the positive twins (the same output without the
canary, a test that prints and reads its own output) pass.
"""

from __future__ import annotations

import pytest

HEADER = """
import logging, subprocess, sys
import pytest
SECRET = "canary-5f1e"
"""

LEAKS = {
    "log-message": 'logging.getLogger("x").warning("key %s", SECRET)',
    "debug-record": 'logging.getLogger("x").debug("key=" + SECRET)',
    "traceback-of-log-record": """
    try:
        raise ValueError("bad key " + SECRET)
    except ValueError:
        logging.getLogger("x").exception("failed")""",
    "print": "print(SECRET)",
    "stderr": "sys.stderr.write(SECRET)",
    "subprocess-output": "subprocess.run([sys.executable, '-c', f'print({SECRET!r})'])",
    "output-the-test-read-itself": "print(SECRET); capsys.readouterr()",
}


def _run(pytester: pytest.Pytester, body: str, *, register: bool = True) -> pytest.RunResult:
    fixtures = "canaries, capsys" if "capsys" in body else "canaries"
    add = "    canaries.add(SECRET)\n" if register else ""
    pytester.makepyfile(f"{HEADER}\ndef test_it({fixtures}):\n{add}    {body.strip()}\n")
    return pytester.runpytest_inprocess(
        "-p", "tests.canary_guard", "-p", "no:cacheprovider",
        "-W", "ignore::pytest.PytestAssertRewriteWarning",
    )


@pytest.mark.parametrize("body", list(LEAKS.values()), ids=list(LEAKS))
def test_guard_fails_a_test_that_leaks_a_canary(pytester: pytest.Pytester, body: str) -> None:
    result = _run(pytester, body)
    result.assert_outcomes(passed=1, errors=1)  # the guard fails it in teardown
    result.stdout.fnmatch_lines(["*a registered canary leaked into logs or output*"])


@pytest.mark.parametrize("body", list(LEAKS.values()), ids=list(LEAKS))
def test_guard_passes_the_same_output_without_a_registered_canary(
    pytester: pytest.Pytester, body: str
) -> None:
    _run(pytester, body, register=False).assert_outcomes(passed=1)


def test_a_test_that_prints_and_reads_its_output_still_works(pytester: pytest.Pytester) -> None:
    body = 'print("hello"); assert capsys.readouterr().out == "hello\\n"; print("shown")'
    _run(pytester, body).assert_outcomes(passed=1)


def test_a_failing_test_still_reports_what_it_printed(pytester: pytest.Pytester) -> None:
    result = _run(pytester, 'print("visible-output"); assert False')
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*Captured stdout call*", "visible-output"])


VECTOR_TEST = """
from tests.conftest import shared_vectors

def test_uses_vectors(shared_vectors):
    assert shared_vectors.is_dir()
"""


@pytest.mark.parametrize(("ci", "outcome"), [("true", "errors"), ("", "skipped")])
def test_missing_shared_vectors_fail_under_ci_and_skip_elsewhere(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str, outcome: str
) -> None:
    monkeypatch.setenv("CI", ci)
    monkeypatch.setenv("HUSHCC_SHARED_VECTORS", str(pytester.path / "no-vectors"))
    pytester.makepyfile(VECTOR_TEST)
    pytester.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(**{outcome: 1})


def test_present_shared_vectors_are_used_under_ci(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("HUSHCC_SHARED_VECTORS", str(pytester.mkdir("vectors")))
    pytester.makepyfile(VECTOR_TEST)
    pytester.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
