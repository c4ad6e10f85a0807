"""``paylake cluster render``: the KubeRay/EKS manifests under cluster/, generated (paylake.kuberay)."""

from __future__ import annotations

import typer

from paylake.cli.base import app, expected_failures
from paylake.report import console

cluster_app = typer.Typer(help="The production cluster: KubeRay on EKS (manifests under cluster/).",
                          no_args_is_help=True)
app.add_typer(cluster_app, name="cluster")


@cluster_app.command("render")
@expected_failures
def render(check: bool = typer.Option(False, "--check", help="Only say whether the files on disk are up to date "
                                                              "(exit 1 if not).")) -> None:
    """Write cluster/k8s/*.yaml and cluster/eks/cluster.yaml from paylake.kuberay and serve/config.yaml."""
    from paylake import kuberay

    if check:
        stale = [name for name, text in kuberay.render_files().items()
                 if not (kuberay.ROOT / "cluster" / name).is_file()
                 or (kuberay.ROOT / "cluster" / name).read_text() != text]
        if stale:
            console.print(f"out of date: {', '.join(stale)}: run 'paylake cluster render'")
            raise typer.Exit(1)
        console.print("cluster/ manifests are up to date")
        return
    for path in kuberay.write():
        console.print(f"wrote {path.relative_to(kuberay.ROOT)}")


@app.command("capacity")
@expected_failures
def capacity(
    transactions_per_day: float = typer.Option(1e9, help="Payments a day."),
    peak_scoring_rps: float = typer.Option(10_000, help="Scoring requests per second at the peak."),
    batch_window_hours: float = typer.Option(4.0, help="The nightly pipeline must fit in this many hours."),
    training_days: int = typer.Option(90, help="Days of history the fraud model trains on."),
    price: list[str] = typer.Option(None, "--price", help="INSTANCE=USD per hour (repeatable): overrides the "
                                                         "stated on-demand price."),
    write: bool = typer.Option(False, "--write", help="Also write cluster/CAPACITY.md."),
) -> None:
    """Workers, replicas and monthly cost for a volume, from the benchmarks' measured rates (bench/results)."""
    from paylake import capacity as cap
    from paylake.errors import PaylakeError
    from paylake.report import summary_table

    prices = {}
    for item in price or []:
        name, _, usd = item.partition("=")
        try:
            prices[name] = float(usd)
        except ValueError:
            raise PaylakeError(f"--price {item!r} is not INSTANCE=USD (e.g. --price m6i.4xlarge=0.768)") from None
    volume = cap.Volume(transactions_per_day, peak_scoring_rps, batch_window_hours, training_days)
    result = cap.plan(volume, cap.load_inputs(), prices)
    console.print(summary_table(f"capacity for {transactions_per_day:,.0f} payments/day, {peak_scoring_rps:,.0f} "
                                "requests/s", ["what", "need", "measured by"], result.lines))
    console.print(summary_table("cluster shape", ["role", "instance", "nodes", "hours/month"],
                                [(r, i, f"{c:g}", f"{h:,.0f}") for r, i, c, h in result.nodes]))
    console.print(f"about {result.monthly_usd:,.0f} USD a month of EC2 on-demand (see cluster/CAPACITY.md)")
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    if write:
        path = cap.kuberay.ROOT / "cluster" / "CAPACITY.md"
        path.write_text(cap.markdown(result, prices))
        console.print(f"wrote {path.relative_to(cap.kuberay.ROOT)}")
