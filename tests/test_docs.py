"""The docs stay true: the README's test command is what CI runs and its example
runs; the plugin-author docs' examples run, and their tables of hooks, capabilities,
record fields, mailbox methods and kit helpers match the code."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pytest

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


# -- docs/contract.md and docs/plugin-authors.md stay true to the code ---------------
DOCS = ROOT / "docs"
_DOC_TEST = re.compile(r"<!-- doc-test: (.+?) -->\n```python\n(.+?)\n```", re.S)


def _doc(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def _doc_tests() -> list[tuple[str, str, str]]:
    return [
        (path.name, label, code)
        for path in sorted(DOCS.glob("*.md"))
        for label, code in _DOC_TEST.findall(path.read_text(encoding="utf-8"))
    ]


def test_the_docs_have_runnable_examples() -> None:
    labels = {(doc, label) for doc, label, _ in _doc_tests()}
    assert {
        ("plugin-authors.md", "plugin helpers"),
        ("plugin-authors.md", "reading records"),
    } <= labels


@pytest.mark.parametrize(
    ("doc", "label", "code"),
    [pytest.param(*example, id=f"{example[0]}:{example[1]}") for example in _doc_tests()],
)
def test_doc_example_runs(
    doc: str, label: str, code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The tutorial's examples use its finished backend, which CI installs only later.
    monkeypatch.syspath_prepend(str(ROOT / "examples" / "third_party_backend" / "src"))
    namespace: dict[str, Any] = {"__name__": f"doc_example_{label.replace(' ', '_')}"}
    exec(compile(code, f"{doc} ({label})", "exec"), namespace)
    # A block that defines tests (as a plugin's own test module would) runs them too.
    tests = sorted((name, fn) for name, fn in namespace.items() if name.startswith("test_"))
    for number, (_name, fn) in enumerate(tests):
        wants_path = "tmp_path" in inspect.signature(fn).parameters
        fn(**({"tmp_path": tmp_path / str(number)} if wants_path else {}))


def _hooks_named(text: str) -> set[str]:
    # torpor_target() is the kit's fixture, the one torpor_ call that is not a hook.
    return set(re.findall(r"\btorpor_[a-z_]+(?=\()", text)) - {"torpor_target"}


def test_the_tutorial_names_every_hook_and_only_real_ones() -> None:
    from torpor import hookspecs

    specs = {name for name in dir(hookspecs) if name.startswith("torpor_")}
    named = _hooks_named(_doc("plugin-authors.md"))
    assert named - specs == set(), "hooks the tutorial names that do not exist"
    assert specs - named == set(), "hooks the tutorial does not name"
    assert _hooks_named(_doc("contract.md")) <= specs


def test_every_optional_hook_has_a_row_saying_when_to_write_it() -> None:
    from torpor import hookspecs
    from torpor._binding import REQUIRED_HOOKS

    section = _doc("plugin-authors.md").split("### Every optional hook", 1)[1].split("###")[0]
    rows = set(re.findall(r"^\| `(torpor_[a-z_]+)\(", section, re.M))
    rows |= set(re.findall(r"`(torpor_[a-z_]+)\(", section))
    optional = {n for n in dir(hookspecs) if n.startswith("torpor_")} - set(REQUIRED_HOOKS)
    assert rows == optional


def test_the_capability_tables_agree_with_the_binding() -> None:
    from torpor._binding import CAPABILITY_HOOKS, UNEARNED

    for doc in ("contract.md", "plugin-authors.md"):
        text = _doc(doc)
        for capability, hook in CAPABILITY_HOOKS.items():
            rows = re.findall(rf"^ *\|[^\n]*`{capability.name}`[^\n]*$", text, re.M)
            assert any(re.search(rf"`{hook}[`(]", row) for row in rows), (doc, capability)
        for capability in UNEARNED:
            assert f"`{capability.name}`" in text, (doc, capability)


def test_the_record_table_lists_every_field() -> None:
    from torpor import Record

    section = _doc("plugin-authors.md").split("### Reading records", 1)[1]
    table = section.split("| field |", 1)[1].split("\n\n", 1)[0]
    assert re.findall(r"^\| `([a-z_]+)` \|", table, re.M) == list(Record._fields)


def test_the_mailbox_table_lists_every_method_with_its_signature() -> None:
    from torpor import Mailbox

    section = _doc("plugin-authors.md").split("### A shared mailbox", 1)[1]
    rows = dict(re.findall(r"^\| `([a-z_]+)\(([^)]*)\)` \|", section, re.M))
    methods = {
        name: ", ".join(list(inspect.signature(getattr(Mailbox, name)).parameters)[1:])
        for name in ("send", "receive", "pending", "waiters", "close")
    }
    assert rows == methods


def test_the_helpers_table_lists_the_public_helpers_with_their_signatures() -> None:
    from torpor.conformance import helpers

    section = _doc("plugin-authors.md").split("### The kit's helpers", 1)[1].split("###")[0]
    rows = dict(re.findall(r"^\| `([A-Za-z_]+)\(([^)]*)\)` \|", section, re.M))
    assert sorted(rows) == sorted(helpers.__all__)
    for name, documented in rows.items():
        real = list(inspect.signature(getattr(helpers, name)).parameters)
        params = [a.split("=")[0].lstrip("*") for a in documented.split(", ") if a not in ("", "*")]
        assert params == real, name


def test_doc_links_resolve() -> None:
    for path in [ROOT / "README.md", *DOCS.glob("*.md")]:
        text = path.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" in target:
                continue
            assert (path.parent / target).exists(), f"{path.name} links to missing {target}"


def test_user_facing_docs_point_to_the_shipped_contract() -> None:
    # DESIGN.md is the project's internal contract; users have docs/contract.md.
    for relative in (
        "docs/contract.md",
        "docs/plugin-authors.md",
        "docs/guide.md",
        "core/hookspecs.py",
        "core/_mailbox.py",
        "core/_record.py",
    ):
        assert "DESIGN" not in (ROOT / relative).read_text(encoding="utf-8"), relative
    assert "docs/contract.md" in (ROOT / "core" / "hookspecs.py").read_text(encoding="utf-8")
