"""The report page: a title, header facts, and sections of paragraphs, plots and tables,
rendered with the packaged Jinja2 template into one self-contained HTML document (CSS inline,
plots inline SVG, no scripts, nothing fetched: it opens offline)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime


@dataclass
class Paragraph:
    text: str
    kind: str = "paragraph"


@dataclass
class Table:
    columns: list[str]  # empty: a table of name/value pairs, no header
    rows: list[list[str]]
    caption: str | None = None
    kind: str = "table"


@dataclass
class Plot:
    name: str  # the figure's data-plot attribute: what tests and links find it by
    title: str
    svg: str  # from tuneloop.report.plots
    caption: str | None = None
    kind: str = "plot"


Block = Paragraph | Table | Plot


@dataclass
class Section:
    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block | None) -> Section:
        self.blocks.extend(b for b in blocks if b is not None)
        return self


@dataclass
class Page:
    title: str
    subtitle: str
    header: list[tuple[str, str]]
    sections: list[Section]
    generated: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))

    @property
    def plots(self) -> list[Plot]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Plot)]


def render_page(page: Page) -> str:
    """The page as one HTML document."""
    from importlib.metadata import PackageNotFoundError, version

    from jinja2 import Environment, PackageLoader, StrictUndefined
    from markupsafe import Markup

    try:
        tuneloop_version = version("tuneloop")
    except PackageNotFoundError:
        tuneloop_version = "unknown"
    env = Environment(
        loader=PackageLoader("tuneloop.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["svg"] = Markup  # matplotlib wrote it and escaped every text it holds
    return env.get_template("report.html").render(page=page, version=tuneloop_version)
