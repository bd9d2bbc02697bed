"""The web app in a real browser (headless Chromium): sign in and answer with the keyboard only
(labels, skip, undo, ranking by keys, free text), with no page errors; the answers land in
the database under the person's name. End to end: an admin creates label, rating, pairwise and
ranking queues on the New queue page; an annotator answers them all from the keyboard; a
reviewer settles the disagreements; a record holding a script never runs it."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.conftest import CLI
from tests.people import PASSWORD, add_people, fast_hashing, import_answers  # noqa: F401
from tuneloop.store.db import Store, open_store
from tuneloop.store.models import Adjudication, Answer, Queue, QueueItem, User
from tuneloop.workflows import answering
from tuneloop.workflows.queue_items import NewItem, dataset_choices
from tuneloop.workflows.queues import QueueSpec, create_queue
from tuneloop.workflows.users import Actor

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("fast_hashing")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Store, dict[str, Actor]]]:
    """The app on a free port, served by uvicorn in a background thread."""
    import uvicorn

    from tuneloop.web.app import create_app

    store = open_store(f"sqlite:///{tmp_path / 'web.db'}")
    people = add_people(store)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(store), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", store, people
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        store.dispose()


def _answers(store: Store, queue_id: int) -> dict[int, Any]:
    with store.transaction() as session:
        rows = session.execute(
            select(QueueItem.position, Answer.value, Answer.user_id)
            .join(Answer, Answer.queue_item_id == QueueItem.id)
            .where(QueueItem.queue_id == queue_id)
        ).all()
    return {position + 1: (value, user) for position, value, user in rows}


def test_keyboard_only_labelling(
    chromium: Any, served: tuple[str, Store, dict[str, Actor]]
) -> None:
    base, store, people = served
    texts = [f"a short review, number {i}" for i in range(6)]
    # records are not needed for items made of responses only; a label queue over responses
    labels = create_queue(
        store,
        QueueSpec(
            "browser-labels",
            "label",
            options={"labels": ["pos", "neg"]},
            guidelines="pos: the reviewer liked it",
            members=["alice"],
        ),
        [NewItem(None, [{"model": "m", "text": t}]) for t in texts],
    ).id
    three = [{"model": f"m{i}", "text": f"candidate answer {i}"} for i in range(3)]
    ranking = create_queue(
        store,
        QueueSpec("browser-ranking", "ranking", members=["alice"]),
        [NewItem(None, three)],
    ).id
    feedback = create_queue(
        store,
        QueueSpec("browser-feedback", "feedback", members=["alice"]),
        [NewItem(None, [{"model": "m", "text": "an answer to comment on"}])],
    ).id

    errors: list[str] = []
    page = chromium.new_page()
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    page.on(
        "console",
        lambda msg: (
            errors.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None
        ),
    )
    try:
        page.goto(f"{base}/queues/{labels}")
        assert "/login" in page.url
        page.keyboard.type("alice")  # the username field has the focus
        page.keyboard.press("Tab")
        page.keyboard.type(PASSWORD)
        with page.expect_navigation():
            page.keyboard.press("Enter")
        assert page.url.endswith(f"/queues/{labels}")
        assert "Item 1 of 6" in page.inner_text("#item")

        def answer(keys: list[str], submit: str = "Control+Enter") -> None:
            for key in keys:
                page.keyboard.press(key)
            with page.expect_navigation():
                page.keyboard.press(submit)

        answer(["1"])  # item 1: pos
        assert "Item 2 of 6" in page.inner_text("#item")
        page.keyboard.press("2")
        assert page.is_checked('input[name="label"][value="neg"]')
        page.keyboard.press("1")  # change of mind before submitting
        assert page.is_checked('input[name="label"][value="pos"]')
        answer(["2"], submit="Enter")  # item 2: neg
        answer([], submit="s")  # item 3: skipped
        assert "Item 4 of 6" in page.inner_text("#item")
        answer(["1"])  # item 4: pos
        answer([], submit="u")  # undo item 4: it comes back with its answer
        assert "Item 4 of 6" in page.inner_text("#item")
        assert "taken back" in page.inner_text("main")
        assert page.is_checked('input[name="label"][value="pos"]')
        answer(["2"])  # item 4: neg now
        assert "Item 5 of 6" in page.inner_text("#item")
        assert page.inner_text("#mine") == "3"
        # the help dialog opens with ? and closes with Escape
        page.keyboard.press("?")
        assert page.is_visible("#help")
        page.keyboard.press("Escape")
        assert not page.is_visible("#help")

        answers = _answers(store, labels)
        alice = people["alice"].id
        assert answers == {
            1: ({"label": "pos"}, alice),
            2: ({"label": "neg"}, alice),
            4: ({"label": "neg"}, alice),
        }

        # ranking by keys: 3 first, then 1; the last one gets the last rank by itself
        page.goto(f"{base}/queues/{ranking}")
        page.keyboard.press("3")
        page.keyboard.press("1")
        assert page.input_value('input[name="rank_2"]') == "1"
        assert page.input_value('input[name="rank_0"]') == "2"
        assert page.input_value('input[name="rank_1"]') == "3"
        page.keyboard.press("Backspace")  # takes the last rank back ...
        assert page.input_value('input[name="rank_1"]') == ""
        page.keyboard.press("2")  # ... and gives it again
        with page.expect_navigation():
            page.keyboard.press("Control+Enter")
        assert "Nothing left for you" in page.inner_text("main")
        assert _answers(store, ranking) == {1: ({"ranking": [2, 0, 1]}, alice)}

        # free text: e focuses the box; shortcuts do not fire while typing; Ctrl+Enter submits
        page.goto(f"{base}/queues/{feedback}")
        page.keyboard.press("e")
        page.keyboard.type("sure, but undo this: it says less than it should")
        with page.expect_navigation():
            page.keyboard.press("Control+Enter")
        assert _answers(store, feedback) == {
            1: ({"text": "sure, but undo this: it says less than it should"}, alice)
        }

        # progress of the label queue, as alice sees it
        page.goto(f"{base}/queues/{labels}/progress")
        assert page.inner_text("#mine") == "3"
        assert page.inner_text("#answers") == "3"
    finally:
        page.close()
    assert errors == []


PAYLOAD = "<script>alert(1)</script><img src=x onerror=alert(2)>"
NOTES = ["a great film", f"{PAYLOAD} said the critic", "a dull plot", "fine acting"]


def _watch(page: Any, problems: list[str]) -> None:
    """Page errors, console errors and any dialog (an injected script's alert) go to problems."""
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on(
        "console",
        lambda msg: (
            problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None
        ),
    )

    def dialog(d: Any) -> None:
        problems.append(f"dialog: {d.message}")
        d.dismiss()

    page.on("dialog", dialog)


def _has_focus(page: Any, field: str) -> None:
    """Wait until the field of that name has the focus (autofocus, once the page is ready)."""
    page.wait_for_function(f"document.activeElement && document.activeElement.name === {field!r}")


def _sign_in(page: Any, base: str, username: str) -> None:
    """From the keyboard: the username field has the focus."""
    page.goto(f"{base}/login")
    _has_focus(page, "username")
    page.keyboard.type(username)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.url.endswith("/queues"), page.url


def _new_queue(
    page: Any,
    base: str,
    name: str,
    question: str,
    dataset: int,
    members: list[str],
    *,
    per_item: int = 1,
    sample: int | None = None,
    items: Path | None = None,
    guidelines: str = "",
) -> int:
    """Fill in the New queue page as an admin would; the new queue's id."""
    page.goto(f"{base}/queues")
    with page.expect_navigation():
        page.click("header nav >> text=New queue")
    _has_focus(page, "name")
    page.keyboard.type(name)
    page.select_option("#question", question)
    page.select_option("#dataset", str(dataset))
    if sample is not None:
        page.fill('input[name="n"]', str(sample))
    if items is not None:
        page.set_input_files('input[name="items"]', str(items))
    page.fill('input[name="annotators_per_item"]', str(per_item))
    for member in members:
        page.check(f'input[name="member"][value="{member}"]')
    page.fill('textarea[name="guidelines"]', guidelines)
    with page.expect_navigation():
        page.click("#new-queue button[type=submit]")
    assert "Queue created." in page.inner_text("main"), page.inner_text("main")
    assert page.inner_text("h1").startswith(name), page.inner_text("h1")
    return int(page.url.split("/admin/queues/")[1].split("?")[0])


def test_admin_annotator_and_reviewer_end_to_end(
    chromium: Any,
    served: tuple[str, Store, dict[str, Actor]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base, store, people = served
    cli = CLI(str(store.engine.url), capsys)
    notes = tmp_path / "notes.jsonl"
    notes.write_text(
        "".join(json.dumps({"id": f"n{i}", "text": t}) + "\n" for i, t in enumerate(NOTES))
    )
    code, _, err = cli(
        "data",
        "import",
        str(notes),
        "--task",
        "classification",
        "--labels",
        "pos,neg",
        "--dedupe",
        "none",
    )
    assert code == 0, err
    import_answers(cli, tmp_path, n=4)
    ids = {d.ref.split("@")[0]: d.id for d in dataset_choices(store)}
    two = [{"model": "m-a", "text": "the first answer"}, {"model": "m-b", "text": "the second"}]
    three = [*two, {"model": "m-c", "text": "a third answer"}]
    pairs, ranks = tmp_path / "pairs.jsonl", tmp_path / "ranks.jsonl"
    pairs.write_text("".join(json.dumps({"id": f"q{i}", "responses": two}) + "\n" for i in (0, 1)))
    ranks.write_text(json.dumps({"id": "q2", "responses": three}) + "\n")

    problems: list[str] = []
    admin = chromium.new_page()
    _watch(admin, problems)
    try:
        _sign_in(admin, base, "ada")
        labels = _new_queue(
            admin,
            base,
            "notes-labels",
            "label",
            ids["notes"],
            ["alice", "bob"],
            per_item=2,
            guidelines="pos: the critic liked it",
        )
        rated = _new_queue(
            admin, base, "answers-rated", "rating", ids["answers"], ["alice"], sample=2
        )
        paired = _new_queue(
            admin, base, "answers-pairs", "pairwise", ids["answers"], ["alice"], items=pairs
        )
        ranked = _new_queue(
            admin, base, "answers-ranks", "ranking", ids["answers"], ["alice"], items=ranks
        )
        admin.goto(f"{base}/queues")
        assert "notes-labels" in admin.inner_text("#queues")
    finally:
        admin.close()
    with store.transaction() as session:
        made = dict(session.execute(select(Queue.name, Queue.question)).all())
    assert made == {
        "notes-labels": "label",
        "answers-rated": "rating",
        "answers-pairs": "pairwise",
        "answers-ranks": "ranking",
    }

    # bob has answered the label queue already (through the API's workflow)
    bob = people["bob"]
    for label in ("pos", "pos", "neg", "neg"):
        item = answering.next_item(store, bob, labels)
        assert item is not None
        answering.submit(store, bob, labels, item.item_id, {"label": label}, source="api")

    annotator = chromium.new_page()
    _watch(annotator, problems)
    try:
        page = annotator
        _sign_in(page, base, "alice")

        def answer(*keys: str, submit: str = "Enter") -> None:
            for key in keys:
                page.keyboard.press(key)
            with page.expect_navigation():
                page.keyboard.press(submit)

        page.goto(f"{base}/queues/{labels}")
        assert "pos: the critic liked it" in page.inner_text("#guidelines")
        assert "Item 1 of 4" in page.inner_text("#item")
        answer("1")  # a great film: pos
        assert PAYLOAD in page.inner_text("#item")  # the script is text on the page
        answer("2", submit="Control+Enter")  # the critic's note: neg (bob said pos)
        answer("2")  # a dull plot: neg
        answer("1")  # fine acting: pos (bob said neg)
        assert "Nothing left for you" in page.inner_text("main")

        page.goto(f"{base}/queues/{rated}")
        assert "excellent: right, complete and clear" in page.inner_text("#item")
        answer("4")
        answer("5", submit="Control+Enter")

        page.goto(f"{base}/queues/{paired}")
        assert "the second" in page.inner_text("#item") and "m-b" not in page.content()
        answer("b")
        answer("t")

        page.goto(f"{base}/queues/{ranked}")
        page.keyboard.press("3")
        page.keyboard.press("1")  # the last one places itself
        assert page.input_value('input[name="rank_1"]') == "3"
        answer()
        assert "Nothing left for you" in page.inner_text("main")
    finally:
        annotator.close()

    alice = people["alice"].id
    assert _mine(store, labels, alice) == [
        {"label": "pos"},
        {"label": "neg"},
        {"label": "neg"},
        {"label": "pos"},
    ]
    assert _mine(store, rated, alice) == [{"rating": 4}, {"rating": 5}]
    assert _mine(store, paired, alice) == [{"choice": "B"}, {"choice": "tie"}]
    assert _mine(store, ranked, alice) == [{"ranking": [2, 0, 1]}]

    reviewer = chromium.new_page()
    _watch(reviewer, problems)
    try:
        page = reviewer
        _sign_in(page, base, "rita")
        page.goto(f"{base}/queues/{labels}/disagreements")
        assert page.locator("#disagreements tbody tr").count() == 2
        with page.expect_navigation():
            page.click("#disagreements >> text=Settle")
        assert PAYLOAD in page.inner_text("#item") and "bob" in page.inner_text("#answers")
        page.keyboard.press("1")  # the critic's note: pos after all
        with page.expect_navigation():
            page.keyboard.press("Control+Enter")
        assert "Saved." in page.inner_text("main") and "item 4" in page.inner_text("h1")
        page.keyboard.press("2")  # fine acting: neg
        with page.expect_navigation():
            page.keyboard.press("Control+Enter")
        assert "Saved." in page.inner_text("main")
        assert page.locator("#disagreements >> text=Change").count() == 2
    finally:
        reviewer.close()
    with store.transaction() as session:
        settled = session.execute(
            select(QueueItem.position, Adjudication.value, User.username)
            .join(Adjudication, Adjudication.queue_item_id == QueueItem.id)
            .join(User, User.id == Adjudication.user_id)
            .where(QueueItem.queue_id == labels)
            .order_by(QueueItem.position)
        ).all()
    assert [tuple(r) for r in settled] == [
        (1, {"label": "pos"}, "rita"),
        (3, {"label": "neg"}, "rita"),
    ]
    assert problems == []


def _mine(store: Store, queue_id: int, user_id: int) -> list[Any]:
    with store.transaction() as session:
        return list(
            session.scalars(
                select(Answer.value)
                .join(QueueItem, QueueItem.id == Answer.queue_item_id)
                .where(QueueItem.queue_id == queue_id, Answer.user_id == user_id)
                .order_by(QueueItem.position)
            )
        )
