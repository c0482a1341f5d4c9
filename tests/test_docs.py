"""The README stays true: its test command is what CI runs, its example runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_ci_runs_the_readme_test_command() -> None:
    block = README.split("<!-- test-command -->", 1)[1]
    command = re.search(r"```bash\n(.+?)\n```", block, re.S)
    assert command is not None
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert command.group(1).strip() in ci.splitlines()


def test_readme_quick_start_runs_the_demo() -> None:
    assert "torpor demo" in README.split("## Quick start", 1)[1].split("<!--", 1)[0]


def test_readme_example_runs() -> None:
    example = re.search(r"## Use\n\n```python\n(.+?)\n```", README, re.S)
    assert example is not None
    code = example.group(1).replace("        ...", "        pass")
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)  # raises if the example broke
    assert namespace["sessions"].closed  # type: ignore[attr-defined]
    # The comment promises the priority message first (checked in the next test).
    line = next(line for line in code.splitlines() if "receive(" in line)
    assert "['cancel', {'job': 1}]" in line


def test_readme_example_output_is_what_the_code_returns() -> None:
    import torpor

    with torpor.open(sweeper=False) as sessions:
        s = sessions.create({"user": "ada", "history": []}, name="日本語")
        sessions.send(s.id, {"job": 1})
        sessions.send(s.id, "cancel", priority=True)
        assert sessions.receive(s.id, max_messages=10) == ["cancel", {"job": 1}]
