"""Versioned prompts: placeholder checks, versions and parents, resolve, diff, the shipped
starters, the ``tuneloop prompt`` commands and annotation with a stored prompt version."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import func, select

from tests.conftest import CLI
from tuneloop.errors import UserError
from tuneloop.llm.prompts import check_placeholders, render_messages, template_variables
from tuneloop.store.db import Store, get_project, open_store
from tuneloop.store.models import Label, LLMCall, PromptVersion
from tuneloop.tasks import TaskType, task_spec
from tuneloop.workflows.prompts import (
    DEFAULT_LEVELS,
    PromptSpec,
    create_prompt,
    default_starter,
    diff_prompts,
    edit_prompt,
    list_prompts,
    prompt_history,
    resolve_prompt,
    starter,
    starters,
)

P = "default"
USER = "Answer with exactly one of: {{ labels | join(', ') }}.\n\nText:\n{{ text }}"

SAMPLES: dict[str, list[dict[str, Any]]] = {
    "classification": [
        {"text": "A bleak film, beautifully made.", "label": "fresh"},
        {"text": "Is the sky blue?", "context": "The sky is blue on clear days."},
    ],
    "multiple_choice": [
        {"question": "2 + 2?", "choices": ["3", "4"], "answer": "4"},
        {"question": "Colour of grass?", "choices": ["red", "green"], "context": "Grass."},
    ],
    "open_qa": [
        {"question": "Who wrote it?", "context": "Ann wrote it.", "answer": "Ann"},
        {"question": "What is the capital of France?"},
    ],
    "summarization": [{"source": "Doctor: What brings you in?\nPatient: A cough for a week."}],
    "instruction": [{"prompt": "Say hello in French.", "response": "Bonjour."}],
}


def n_prompts(store: Store) -> int:
    with store.transaction() as s:
        return s.scalar(select(func.count()).select_from(PromptVersion)) or 0


def table_cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.split("│")[1:-1]]


def resolve(store: Store, ref: str, task: str | None = None, role: str | None = None) -> Any:
    with store.transaction() as s:
        return resolve_prompt(s, get_project(s, P).id, ref, task, role=role)


# --- placeholders -----------------------------------------------------------------------------


def test_template_variables_skip_loop_variables_and_globals() -> None:
    found = template_variables(
        "{% for c in choices %}{{ loop.index }} {{ c }}{% endfor %}{% set x = 1 %}{{ x }}"
        "{{ range(3) | list }}{% if context %}{{ context }}{% endif %}{{ question }}"
    )
    assert found == {"choices", "context", "question"}


def test_template_syntax_error_names_the_line() -> None:
    with pytest.raises(UserError, match=r"line 2: .*"):
        template_variables("fine\n{{ text }\n")
    with pytest.raises(UserError, match=r"prompt system template, line 1"):
        check_placeholders("classification", "annotator", "{% if %}", "{{ text }}")


def test_unknown_placeholder_named_with_a_suggestion() -> None:
    with pytest.raises(UserError) as err:
        check_placeholders("classification", "annotator", None, "Text: {{ txt }}")
    assert str(err.value) == (
        "prompt user template: unknown placeholder 'txt'; allowed: context, labels, text; "
        "did you mean 'text'?"
    )
    with pytest.raises(UserError, match=r"unknown placeholder 'zzz'; allowed: labels, source$"):
        check_placeholders("summarization", "annotator", "{{ zzz }}", "{{ source }}")


def test_annotator_must_not_see_the_answer() -> None:
    for task, field in [
        ("classification", "label"),
        ("multiple_choice", "answer"),
        ("open_qa", "answer"),
        ("open_qa", "rejected"),
        ("summarization", "summary"),
        ("instruction", "response"),
    ]:
        inputs = SAMPLES[task][0]
        first = next(iter(inputs))
        with pytest.raises(UserError, match=rf"'{field}' is the task's output.*must not see"):
            check_placeholders(task, "annotator", None, f"{{{{ {first} }}}} {{{{ {field} }}}}")


def test_judge_placeholders() -> None:
    check_placeholders(
        "summarization",
        "judge",
        "Scale: {{ levels | join(', ') }}",
        "{{ source }}\n{{ output }}\n{% if reference %}{{ reference }}{% endif %}",
    )
    check_placeholders("open_qa", "judge", None, "{{ question }} {{ context }} {{ output }}")
    with pytest.raises(UserError, match=r"'summary' is the task's output .*'reference'"):
        check_placeholders("summarization", "judge", None, "{{ output }} {{ summary }}")
    with pytest.raises(UserError, match=r"unknown placeholder 'labels'"):
        check_placeholders("summarization", "judge", None, "{{ output }} {{ labels }}")
    with pytest.raises(UserError, match=r"use \{\{ output \}\}"):
        check_placeholders("summarization", "judge", None, "{{ source }}")
    with pytest.raises(UserError, match=r"unknown placeholder 'output'"):
        check_placeholders("summarization", "annotator", None, "{{ source }} {{ output }}")


def test_prompt_must_show_the_record_and_know_its_task_and_role() -> None:
    with pytest.raises(UserError, match=r"never shows the record: use at least one of"):
        check_placeholders("classification", "annotator", None, "Say pos.")
    with pytest.raises(UserError, match=r"unknown task type 'sentiment'"):
        check_placeholders("sentiment", "annotator", None, "{{ text }}")
    with pytest.raises(UserError, match=r"unknown prompt role 'critic'"):
        check_placeholders("classification", "critic", None, "{{ text }}")


def test_render_defines_every_input_and_hides_outputs() -> None:
    system, user = (
        "Labels: {{ labels | join('/') }}",
        "{% if context %}C: {{ context }}\n{% endif %}T: {{ text }}",
    )
    record = {"text": "hi", "label": "pos"}
    messages = render_messages(system, user, record, ["pos", "neg"], task="classification")
    assert messages == [
        {"role": "system", "content": "Labels: pos/neg"},
        {"role": "user", "content": "T: hi"},
    ]
    with pytest.raises(UserError, match="'label' is undefined"):
        render_messages(None, "{{ label }}", record, [], task="classification")
    judged = render_messages(
        None,
        "{{ source }} -> {{ output }} ({{ reference }}, {{ levels[4] }})",
        {"source": "s", "summary": "ref"},
        task="summarization",
        extra={"output": "o", "reference": None, "levels": list(DEFAULT_LEVELS)},
    )
    assert judged[0]["content"] == "s -> o (None, excellent)"


# --- versions ---------------------------------------------------------------------------------


def test_create_edit_versions_and_parents(store: Store) -> None:
    spec = PromptSpec(
        task="classification", user=USER + "\n\n", system="Be brief.", note="first", author="ann"
    )
    v1 = create_prompt(store, P, "sent", spec)
    assert (v1.version, v1.parent_id, v1.role, v1.params, v1.note) == (
        1,
        None,
        "annotator",
        {},
        "first",
    )
    assert v1.user_template == USER  # trailing whitespace dropped
    v2 = edit_prompt(store, P, "sent", user=USER + " Be careful.", note="careful", author="bo")
    assert (v2.version, v2.parent_id, v2.system_template) == (2, v1.id, "Be brief.")
    assert (v2.note, v2.author) == ("careful", "bo")
    # a branch from version 1 is version 3, its parent version 1
    v3 = edit_prompt(store, P, "sent@1", system="")
    assert (v3.version, v3.parent_id, v3.system_template, v3.user_template) == (
        3,
        v1.id,
        None,
        USER,
    )
    assert v3.note is None and v3.author is None  # a version's note is its own
    assert [p.version for p in prompt_history(store, P, "sent")] == [1, 2, 3]
    assert resolve(store, "sent").id == v3.id
    assert resolve(store, "sent@2", "classification", "annotator").id == v2.id
    create_prompt(store, P, "a-first", PromptSpec(task="summarization", user="{{ source }}"))
    assert [(p.name, p.version) for p in list_prompts(store, P)] == [("a-first", 1), ("sent", 3)]
    assert list_prompts(store, "another-project") == []


def test_create_refuses_an_existing_name_and_bad_input(store: Store) -> None:
    create_prompt(store, P, "p", PromptSpec(task="classification", user="{{ text }}"))
    with pytest.raises(
        UserError, match=r"prompt 'p' exists \(latest p@1\).*tuneloop prompt edit p"
    ):
        create_prompt(store, P, "p", PromptSpec(task="classification", user="{{ text }}"))
    with pytest.raises(UserError, match="bad prompt name"):
        create_prompt(store, P, "p@2", PromptSpec(task="classification", user="{{ text }}"))
    with pytest.raises(UserError, match="user template is empty"):
        create_prompt(store, P, "q", PromptSpec(task="classification", user="  \n"))
    with pytest.raises(UserError, match="unknown task type"):
        create_prompt(store, P, "q", PromptSpec(task="nope", user="{{ text }}"))
    assert n_prompts(store) == 1


def test_typo_placeholder_writes_nothing(store: Store) -> None:
    with pytest.raises(UserError, match=r"unknown placeholder 'txt'.*did you mean 'text'\?"):
        create_prompt(store, P, "p", PromptSpec(task="classification", user="{{ txt }}"))
    assert n_prompts(store) == 0
    create_prompt(store, P, "p", PromptSpec(task="classification", user="{{ text }}"))
    with pytest.raises(UserError, match=r"unknown placeholder 'lables'.*did you mean 'labels'"):
        edit_prompt(store, P, "p", user="{{ text }} {{ lables }}")
    with pytest.raises(UserError, match="must not see the answer"):
        edit_prompt(store, P, "p", user="{{ text }} {{ label }}")
    assert n_prompts(store) == 1


def test_edit_that_changes_nothing_is_refused(store: Store) -> None:
    create_prompt(store, P, "p", PromptSpec(task="classification", user="{{ text }}"))
    with pytest.raises(UserError, match=r"nothing changed.*p@1"):
        edit_prompt(store, P, "p", user="{{ text }}\n", note="only a note")
    with pytest.raises(UserError, match="nothing changed"):
        edit_prompt(store, P, "p")
    assert n_prompts(store) == 1


def test_judge_levels(store: Store) -> None:
    judge = PromptSpec(task="summarization", role="judge", user="{{ source }} {{ output }}")
    v1 = create_prompt(store, P, "j", judge)
    assert v1.params == {"levels": list(DEFAULT_LEVELS)}
    scale = ["awful", "poor", "fair", "fine", "great"]
    v2 = edit_prompt(store, P, "j", params={"levels": scale})
    assert v2.params == {"levels": scale} and v2.user_template == v1.user_template
    for bad in (scale[:4], [*scale[:4], "awful"], [*scale[:4], " "], "awful"):
        with pytest.raises(UserError, match="judge levels must be"):
            edit_prompt(store, P, "j", params={"levels": bad})
    with pytest.raises(UserError, match="'levels' is a judge's parameter"):
        create_prompt(
            store,
            P,
            "a",
            PromptSpec(task="summarization", user="{{ source }}", params={"levels": scale}),
        )
    assert n_prompts(store) == 2


def test_resolve_errors(store: Store) -> None:
    with pytest.raises(UserError, match="there are no prompts yet"):
        resolve(store, "sent")
    create_prompt(store, P, "sentiment", PromptSpec(task="classification", user="{{ text }}"))
    create_prompt(store, P, "summary", PromptSpec(task="summarization", user="{{ source }}"))
    with pytest.raises(
        UserError,
        match=r"no prompt 'sentimnt' \(did you mean 'sentiment'\?\); known prompts: "
        "sentiment, summary",
    ):
        resolve(store, "sentimnt")
    with pytest.raises(UserError, match="prompt 'sentiment' has no version 4; versions: 1"):
        resolve(store, "sentiment@4")
    with pytest.raises(UserError, match="bad prompt reference 'sentiment@v2'"):
        resolve(store, "sentiment@v2")
    with pytest.raises(UserError, match="prompt summary@1 is written for summarization, not"):
        resolve(store, "summary", "classification")
    with pytest.raises(
        UserError, match="summary@1 is for the annotator role; this needs a judge prompt"
    ):
        resolve(store, "summary", role="judge")
    with pytest.raises(
        UserError, match="no finished evaluation of prompt summary; run `tuneloop prompt evaluate`"
    ):
        resolve(store, "summary@best")


def test_diff(store: Store) -> None:
    v1 = create_prompt(
        store, P, "p", PromptSpec(task="classification", user="Classify.\n{{ text }}")
    )
    v2 = edit_prompt(store, P, "p", user="Classify carefully.\n{{ text }}", system="Be brief.")
    text = diff_prompts(v1, v2)
    assert "--- p@1 user\n+++ p@2 user\n" in text
    assert "-Classify.\n+Classify carefully.\n {{ text }}\n" in text
    assert "+++ p@2 system\n@@ -0,0 +1 @@\n+Be brief.\n" in text
    assert "params" not in text and "kind" not in text
    assert diff_prompts(v1, v1) == ""
    judge = create_prompt(
        store, P, "j", PromptSpec(task="classification", role="judge", user="{{ output }}")
    )
    other = diff_prompts(v1, judge)
    assert "-classification annotator\n+classification judge" in other
    assert '+  "levels": [' in other


# --- starters ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(starters()))
def test_starter_is_valid_and_renders(name: str) -> None:
    spec = starter(name)
    assert spec.note and spec.user.strip()
    check_placeholders(spec.task, spec.role, spec.system, spec.user)
    extras: list[dict[str, Any] | None] = [None]
    if spec.role == "judge":
        levels = spec.params["levels"]
        assert len(levels) == 5 and (name == "judge-harm" or levels == list(DEFAULT_LEVELS))
        extras = [
            {"output": "The candidate.", "reference": None, "levels": levels},
            {"output": "The candidate.", "reference": "The reference.", "levels": levels},
        ]
    used = template_variables(spec.user) | template_variables(spec.system or "")
    for record in SAMPLES[spec.task]:
        for extra in extras:
            messages = render_messages(
                spec.system, spec.user, record, ["fresh", "rotten"], task=spec.task, extra=extra
            )
            content = messages[-1]["content"]
            for name in set(task_spec(spec.task).inputs) & used:
                value = record.get(name)
                for part in value if isinstance(value, list) else [value]:
                    assert part is None or part in content, (name, content)
            assert "None" not in content
            if extra is not None:
                assert "The candidate." in content and "Rating: <level>" in content
                if "reference" in used:
                    assert ("The reference." in content) == (extra["reference"] is not None)
                assert all(level in content for level in levels)


def test_starters_cover_the_tasks_and_the_demo() -> None:
    known = starters()
    for task in TaskType:
        assert known[default_starter(task.value)].task == task.value
    assert default_starter("summarization", "judge") == "judge-summary"
    assert default_starter("open_qa", "judge") == "judge-answer"
    with pytest.raises(UserError, match="no judge starter for classification"):
        default_starter("classification", "judge")
    assert {"conversation-summary", "sentiment-v1", "sentiment-v2"} <= set(known)
    v2 = render_messages(
        known["sentiment-v2"].system,
        known["sentiment-v2"].user,
        {"text": "Grim, yet I loved it."},
        ["fresh", "rotten"],
        task="classification",
    )[-1]["content"]
    assert (
        "- fresh: the reviewer thinks well" in v2 and "- rotten: the reviewer thinks poorly" in v2
    )
    assert "final verdict" in v2 and "label only" in v2
    with pytest.raises(UserError, match=r"no starter prompt 'nope'; starters: classification"):
        starter("nope")
    known["judge-summary"].params["levels"].append("x")  # a copy: the next caller is unaffected
    assert starter("judge-summary").params["levels"] == list(DEFAULT_LEVELS)


# --- CLI --------------------------------------------------------------------------------------


def test_cli_new_list_show_diff(cli: CLI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNELOOP_USER", "tester")
    code, out, err = cli("prompt", "new", "cls", "--task", "classification")
    assert code == 0, err
    assert "prompt cls@1 (classification, annotator)" in out
    code, out, err = cli("prompt", "new", "rt", "--from", "sentiment-v1", "--note", "v1")
    assert (code, out.strip()) == (0, "prompt rt@1 (classification, annotator)"), err
    user_file = tmp_path / "user.j2"
    user_file.write_text(starter("sentiment-v2").user)
    code, out, err = cli("prompt", "edit", "rt", "--user-file", str(user_file), "--note", "v2")
    assert code == 0, err
    assert "prompt rt@2 (classification, annotator), edited from rt" in out
    code, out, err = cli("prompt", "new", "judge", "--task", "summarization", "--role", "judge")
    assert code == 0 and "prompt judge@1 (summarization, judge)" in out, err
    code, out, _ = cli(
        "prompt", "new", "s", "--task", "summarization", "--user", "Sum: {{ source }}"
    )
    assert code == 0

    code, out, _ = cli("prompt", "list")
    assert code == 0
    rows = {cells[0]: cells for cells in map(table_cells, out.splitlines()) if cells}
    assert rows["rt"] == ["rt", "@2", "classification", "annotator", "2", "v2"]
    assert rows["judge"][2:4] == ["summarization", "judge"]
    assert (
        rows["cls"][5]
        == "starting prompt for classification (also yes/no questions about a passage)"
    )
    code, out, _ = cli("prompt", "list", "rt")
    assert code == 0 and "rt (classification, annotator)" in out
    assert "@1" in out and "v2" in out and "tester" in out

    code, out, _ = cli("prompt", "show", "rt@2")
    assert code == 0
    assert "prompt  rt@2" in out and "parent  rt@1" in out and "author  tester" in out
    assert "{{ labels | join" in out and "{% for label in labels %}" in out
    code, out, _ = cli("prompt", "show", "judge")
    assert '"levels"' in out and "{{ output }}" in out and "parent  -" in out

    code, out, _ = cli("prompt", "diff", "rt@1", "rt@2")
    assert code == 0
    assert "--- rt@1 user" in out and "+++ rt@2 user" in out
    assert "+Label the movie review below" in out
    code, again, _ = cli("prompt", "diff", "rt@2")  # against its parent
    assert again == out
    code, out, _ = cli("prompt", "diff", "rt@1", "rt@1")
    assert "rt@1 and rt@1 are the same" in out
    code, _, err = cli("prompt", "diff", "cls")
    assert code == 1 and "cls@1 has no parent" in err


def test_cli_errors(cli: CLI) -> None:
    code, out, err = cli("prompt", "new", "p", "--task", "classification", "--user", "{{ txt }}")
    assert code == 1
    assert "unknown placeholder 'txt'" in err and "did you mean 'text'?" in err
    code, _, err = cli("prompt", "new", "p", "--task", "classification", "--user", "{{ label }}")
    assert code == 1 and "must not see the answer" in err
    code, out, _ = cli("prompt", "list")
    assert "no prompts yet" in out
    code, _, err = cli("prompt", "new", "p", "--from", "judge-summary", "--task", "open_qa")
    assert code == 1 and "starter 'judge-summary' is for summarization, not open_qa" in err
    code, _, err = cli("prompt", "new", "p", "--task", "classification", "--system", "Hi")
    assert code == 1 and "--user or --user-file" in err
    code, _, err = cli("prompt", "new", "p")
    assert code == 1 and "give --task" in err
    code, _, err = cli("prompt", "show", "p")
    assert code == 1 and "no prompts yet" in err
    code, _, err = cli("prompt", "starters", "--show", "nope")
    assert code == 1 and "no starter prompt 'nope'" in err


def test_cli_starters(cli: CLI) -> None:
    code, out, _ = cli("prompt", "starters")
    assert code == 0
    for name in starters():
        assert name in out
    code, out, _ = cli("prompt", "starters", "--show", "judge-summary")
    assert code == 0
    assert "role    judge" in out and "Rating: <level>" in out and '"very bad"' in out


def test_cli_edit_in_the_editor(cli: CLI, monkeypatch: pytest.MonkeyPatch) -> None:
    from tuneloop.cli import prompt as prompt_cli

    monkeypatch.setenv("TUNELOOP_USER", "ed")
    assert cli("prompt", "new", "j", "--from", "judge-summary")[0] == 0
    shown: list[str] = []

    def unchanged(text: str) -> str | None:
        shown.append(text)
        return text

    monkeypatch.setattr(prompt_cli, "open_editor", unchanged)
    code, _, err = cli("prompt", "edit", "j")
    assert code == 1 and "nothing changed" in err
    doc = yaml.safe_load(shown[0])
    assert doc["user"].rstrip() == starter("judge-summary").user.rstrip()
    assert doc["params"] == {"levels": list(DEFAULT_LEVELS)} and doc["note"] == ""
    assert "\nuser: |\n" in shown[0]  # templates as YAML blocks

    monkeypatch.setattr(prompt_cli, "open_editor", lambda text: None)  # not saved
    assert cli("prompt", "edit", "j")[0] == 1

    def revise(text: str) -> str:
        doc = yaml.safe_load(text)
        doc["user"] = doc["user"].replace("Rate the candidate", "Carefully rate the candidate")
        doc["note"] = "more careful"
        doc["params"]["levels"] = ["0", "1", "2", "3", "4"]
        return yaml.safe_dump(doc)

    monkeypatch.setattr(prompt_cli, "open_editor", revise)
    code, out, err = cli("prompt", "edit", "j@1")
    assert code == 0, err
    assert "prompt j@2 (summarization, judge), edited from j@1" in out
    code, out, _ = cli("prompt", "show", "j")
    assert "Carefully rate the candidate" in out and "note    more careful" in out
    assert "author  ed" in out and '"4"' in out
    code, out, _ = cli("prompt", "diff", "j@1", "j@2")
    assert "+++ j@2 user" in out and "+++ j@2 params" in out and "system" not in out

    monkeypatch.setattr(prompt_cli, "open_editor", lambda text: "user: [unclosed\n")
    code, _, err = cli("prompt", "edit", "j")
    assert code == 1 and "edited prompt document, line" in err
    monkeypatch.setattr(prompt_cli, "open_editor", lambda text: "user: '{{ outptu }}'\n")
    code, _, err = cli("prompt", "edit", "j")
    assert code == 1 and "did you mean 'output'?" in err
    monkeypatch.setattr(prompt_cli, "open_editor", lambda text: "usr: x\n")
    code, _, err = cli("prompt", "edit", "j")
    assert code == 1 and "unknown keys usr" in err


# --- annotation with a stored prompt ----------------------------------------------------------


def test_annotate_with_a_prompt_version(cli: CLI, db_url: str, tmp_path: Path) -> None:
    path = tmp_path / "reviews.jsonl"
    path.write_text(
        "".join(
            json.dumps(
                {
                    "text": f"review {i} is {'pos' if i % 2 else 'neg'}",
                    "label": "pos" if i % 2 else "neg",
                }
            )
            + "\n"
            for i in range(6)
        )
    )
    assert cli("data", "import", str(path), "--task", "classification", "--dedupe", "none")[0] == 0
    assert cli("prompt", "new", "rt", "--from", "sentiment-v1")[0] == 0
    assert cli("prompt", "edit", "rt", "--user", "Label it.\n\n{{ text }}")[0] == 0
    code, out, err = cli(
        "annotate",
        "--dataset",
        "reviews",
        "--model",
        "fake",
        "--prompt",
        "rt@1",
        "--split",
        "unsplit",
    )
    assert code == 0, err
    assert "labelled 6 records now" in out
    store = open_store(db_url)
    with store.transaction() as s:
        v1 = s.scalars(select(PromptVersion).where(PromptVersion.version == 1)).one()
        labels = s.scalars(select(Label)).all()
        assert len(labels) == 6 and {lab.prompt_version_id for lab in labels} == {v1.id}
        assert {lab.value for lab in labels} == {"pos", "neg"}
        call = s.scalars(select(LLMCall)).first()
        assert call is not None
        content = call.messages[-1]["content"]
        assert content.startswith("Is this movie review positive or negative?")
        assert "Review:\nreview " in content and "exactly one of: " in content
    store.dispose()
    assert cli("prompt", "new", "j", "--from", "judge-answer")[0] == 0
    code, _, err = cli("annotate", "--dataset", "reviews", "--model", "fake", "--prompt", "j")
    assert code == 1 and "j@1 is written for open_qa, not classification" in err
    code, _, err = cli("annotate", "--dataset", "reviews", "--model", "fake", "--prompt", "rt@9")
    assert code == 1 and "prompt 'rt' has no version 9; versions: 1, 2" in err
