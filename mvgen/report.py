"""Tables for people: what the Plan deploys and where."""

from __future__ import annotations

from mvgen.plan import Plan


def apps_rows(plan: Plan) -> list[tuple[str, str, str, str, str]]:
    """One row per app: name, mode, GPU spec, models, URL."""
    rows = []
    for app in plan.apps:
        gpus = sorted({d.gpu_spec for d in app.deployments})
        models = ", ".join(d.model.key for d in app.deployments)
        url = app.url or f"https://<workspace>--{app.label}.modal.run"
        rows.append((app.name, plan.mode, ", ".join(gpus), models, url))
    return rows


def apps_table(plan: Plan) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(plan.apps)} apps, {plan.mode} mode")
    for column in ("app", "mode", "gpu", "models"):
        table.add_column(column, overflow="fold")
    table.add_column("endpoint", no_wrap=True)  # a URL folded across lines cannot be copied
    for row in apps_rows(plan):
        table.add_row(*row)
    console = Console()
    wide = console.measure(table, options=console.options.update_width(10_000)).maximum
    if wide > console.width:  # print it whole; a narrow terminal wraps it, the text stays one line
        console = Console(width=wide)
    console.print(table)
    console.print(f"web endpoints: {plan.endpoints_needed} of {plan.endpoint_limit}")
