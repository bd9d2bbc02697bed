"""The web app in a real browser (headless Chromium): sign in and answer with the keyboard only
(labels, skip, undo, ranking by keys, free text), with no page errors; the answers land in
the database under the person's name."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.people import PASSWORD, add_people, fast_hashing  # noqa: F401
from tuneloop.store.db import Store, open_store
from tuneloop.store.models import Answer, QueueItem
from tuneloop.workflows.queue_items import NewItem
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
