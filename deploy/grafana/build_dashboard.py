"""Builds deploy/grafana/ragstream.json, the pipeline's Grafana dashboard, with Grafana's own
typed builders (grafana-foundation-sdk): ``python deploy/grafana/build_dashboard.py``.

Every query reads the series the query API's /metrics and the Ray nodes export, or the
recording rules of deploy/prometheus/ragstream-rules.yml. Each replica reports the same pipeline
figures, so those are taken as a max over scrape targets, never summed.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard, prometheus, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, GridPos

OUTPUT = Path(__file__).with_name("ragstream.json")
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class PanelSpec:
    title: str
    unit: str
    queries: tuple[Query, ...]
    description: str = ""


def _freshness_quantile(quantile: float) -> Query:
    """The freshness of the served generation's events at ``quantile`` (the recording rule keeps
    the consumer group a replica serves from)."""
    per_bucket = "sum by (le, consumer_group) (ragstream:freshness_seconds_bucket:rate5m)"
    return Query(
        f"histogram_quantile({quantile}, {per_bucket})", f"p{round(quantile * 100)} {{{{consumer_group}}}}"
    )


PANELS = (
    PanelSpec(
        "Throughput per hop",
        "ops",
        (
            Query("rate(ragstream:consumer_committed_offset:sum_by_hop[2m])", "{{hop}}: events committed/s"),
            Query("max(rate(ragstream_chunks_embedded_total[2m]))", "chunks embedded/s"),
            Query("max(rate(ragstream_chunks_deleted_total[2m]))", "chunks deleted/s"),
        ),
        "Events each hop's consumer group commits per second, and what the indexers write",
    ),
    PanelSpec(
        "Lag",
        "short",
        (Query("ragstream:consumer_lag:sum_by_hop", "{{hop}}"),),
        "Events published but not yet committed, per hop",
    ),
    PanelSpec(
        "Freshness per event",
        "s",
        (_freshness_quantile(0.5), _freshness_quantile(0.95), _freshness_quantile(0.99)),
        "Seconds from each event's publication to its chunks in the served index, over the events "
        "indexed in the last 5 minutes (its consumer group's histogram)",
    ),
    PanelSpec(
        "Oldest waiting event",
        "s",
        (
            Query(
                "quantile_over_time(0.5, ragstream:oldest_unindexed_age_seconds:max[5m])", "p50 oldest wait"
            ),
            Query(
                "quantile_over_time(0.9, ragstream:oldest_unindexed_age_seconds:max[5m])", "p90 oldest wait"
            ),
            Query(
                "quantile_over_time(0.99, ragstream:oldest_unindexed_age_seconds:max[5m])", "p99 oldest wait"
            ),
            Query(
                "histogram_quantile(0.99, max by (le) (rate(ragstream_batch_seconds_bucket[5m])))",
                "p99 batch, fetch to commit",
            ),
        ),
        "How long the oldest event not yet indexed had waited, over the scrapes of the last 5 minutes: "
        "what the histogram cannot show until the event is indexed",
    ),
    PanelSpec(
        "Search latency per mode",
        "s",
        (
            Query(
                "histogram_quantile(0.5, sum by (le, mode) (rate(ragstream_search_seconds_bucket[5m])))",
                "{{mode}} p50",
            ),
            Query(
                "histogram_quantile(0.99, sum by (le, mode) (rate(ragstream_search_seconds_bucket[5m])))",
                "{{mode}} p99",
            ),
        ),
        "Time to answer a search in each replica, after any read-your-writes wait",
    ),
    PanelSpec(
        "Dead letters",
        "ops",
        (Query("max(rate(ragstream_dead_letters_total[5m]))", "dead letters/s"),),
        "Records written to the dead-letter topic by the changes stage or the consumers",
    ),
    PanelSpec(
        "Consumer actors",
        "short",
        (
            Query("max by (consumer_group) (ragstream_consumers_desired)", "{{consumer_group}} desired"),
            Query("max by (consumer_group) (ragstream_consumers_actual)", "{{consumer_group}} answering"),
            Query("max by (consumer_group) (ragstream_consumers_max)", "{{consumer_group}} ceiling"),
        ),
        "What the lag calls for, what answers, and the most the controller may run",
    ),
    PanelSpec(
        "API replicas",
        "short",
        (
            Query('sum(ray_serve_deployment_replica_healthy{deployment="query-api"})', "healthy"),
            Query("max(ragstream_api_replicas_desired)", "configured"),
        ),
        "Replicas Serve finds healthy (one behind the chunk log fails its check) against those configured",
    ),
)


def _panel(spec: PanelSpec, index: int) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(spec.title)
        .description(spec.description)
        .unit(spec.unit)
        .min(0)
        .datasource(DATASOURCE)
        # Two panels a row, each half the grid's 24 columns.
        .grid_pos(GridPos(h=8, w=12, x=12 * (index % 2), y=8 * (index // 2)))
    )
    for ref, query in zip("ABCDEFGH", spec.queries, strict=False):
        panel.with_target(
            prometheus.Dataquery()
            .expr(query.expr)
            .legend_format(query.legend)
            .ref_id(ref)
            .datasource(DATASOURCE)
        )
    return panel


def build() -> dashboard.Dashboard:
    """The dashboard, one time-series panel per PanelSpec."""
    board = (
        dashboard.Dashboard("ragstream pipeline")
        .uid("ragstream-pipeline")
        .tags(["ragstream"])
        .refresh("30s")
        .time("now-1h", "now")
        .with_variable(dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
    )
    for index, spec in enumerate(PANELS):
        board.with_panel(_panel(spec, index))
    return board


def render() -> str:
    """The dashboard's JSON as committed: sorted keys, so a change reads as a small diff."""
    encoded = json.loads(json.dumps(build().build(), cls=JSONEncoder))
    return json.dumps(encoded, indent=2, sort_keys=True) + "\n"


def queries() -> list[str]:
    """Every panel's PromQL, for promtool to parse."""
    return [query.expr for spec in PANELS for query in spec.queries]


if __name__ == "__main__":
    OUTPUT.write_text(render(), encoding="utf-8")
    sys.stdout.write(f"wrote {OUTPUT}\n")
