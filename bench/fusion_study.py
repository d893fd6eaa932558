"""Fusion study, offline: how would hybrid search rank with another fusion, on every set?

Reads the candidate dumps that ``ragstream eval --beir …`` writes (every query's vector and
lexical hits with their scores, as deep as hybrid mode reads them) and ranks each query again
with each candidate fusion, chunks first and then deduplicated to documents, as the API does.
No re-indexing: the whole study takes seconds.

Candidates:

- ``rrf``: weighted reciprocal rank fusion (production's ``query_api.fusion``) over a grid of
  ``k`` and weights; the setting in the dumps is today's default;
- ``convex``: ``α · vector + (1 − α) · lexical`` over normalised scores (Bruch et al., 2023), with
  min-max, z-score, or theoretical bounds (cosine in [−1, 1]; BM25 over the query's best score);
- ``adaptive``: production's ``convex_fusion``: min-max, with α chosen per query from how far
  each retriever's best score stands out from its other candidates, pulled halfway to a prior.

A default is judged by its worst case, so ``--fine`` also scores fine grids around each family
and reports the run of parameter values that passes on every set (a wide run: the choice does not
hinge on one value), and the middle of the run chosen with each set held out, scored on that set.

A candidate *passes* when, on every set, its nDCG@10 and recall@5 are at least
``max(vector, lexical) − 0.005``. Among those that pass, the best mean nDCG@10 wins; if none
passes, the smallest worst shortfall. Choosing on the same queries as reporting flatters the
winner, so each winner is also chosen again with one set held out, and scored on that set.

    .venv/bin/python bench/fusion_study.py                 # the newest run's dumps
    .venv/bin/python bench/fusion_study.py --run RUN_ID
    .venv/bin/python bench/fusion_study.py --fine          # and the robustness of each family
    .venv/bin/python bench/fusion_study.py --latency       # time the production fusions alone
    .venv/bin/python bench/fusion_study.py DUMP.json.gz …
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from evaluation.candidates import CandidateQuery, CandidateSet, load_candidates
from evaluation.ranking_metrics import documents_in_order, per_query_scores
from evaluation.results import new_run_id, save_json
from query_api.fusion import STANDOUT_POWER, convex_fusion, reciprocal_rank_fusion

RESULTS = Path("bench/results")
TOLERANCE = 0.005
METRICS = ("ndcg@10", "recall@5")
#: Documents a fused ranking keeps: every metric looks at the first 10.
KEEP = 10

RRF_KS = (5, 10, 20, 40, 60, 100)
RRF_LEXICAL_WEIGHTS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
#: Rankings that are not fusions of the study: the two retrievers, and what the API returned.
SINGLES = ("vector", "lexical", "api hybrid")
ALPHAS = tuple(round(0.1 * step, 1) for step in range(1, 10))

#: A query's hits → its first documents, best first.
Fusion = Callable[[CandidateQuery], list[str]]


# --- normalisations: one retriever's scores of one query → comparable numbers -------------------


def _minmax(scores: list[float], retriever: str) -> list[float]:
    low, high = min(scores), max(scores)
    return [(s - low) / (high - low) if high > low else 1.0 for s in scores]


def _zscore(scores: list[float], retriever: str) -> list[float]:
    mean = statistics.fmean(scores)
    spread = statistics.pstdev(scores)
    return [(s - mean) / spread if spread > 0 else 0.0 for s in scores]


def _theoretical(scores: list[float], retriever: str) -> list[float]:
    # Cosine similarity is bounded by [-1, 1]; BM25 has no upper bound, so the query's best
    # score stands in for it, and 0 (no term matched) is its lower bound.
    if retriever == "vector":
        return [(s + 1.0) / 2.0 for s in scores]
    best = max(scores)
    return [s / best if best > 0 else 0.0 for s in scores]


NORMALISATIONS: dict[str, Callable[[list[float], str], list[float]]] = {
    "minmax": _minmax,
    "zscore": _zscore,
    "theoretical": _theoretical,
}


#: Per query (by object id) and normalisation: what every fusion of that kind reads again.
_NORMALISED: dict[tuple[int, str, str], tuple[dict[str, float], float]] = {}
_DOC_OF: dict[int, dict[str, str]] = {}


def _normalised(query: CandidateQuery, retriever: str, how: str) -> tuple[dict[str, float], float]:
    """chunk id → normalised score, and the score a chunk this retriever did not return gets:
    the lowest it returned (it ranked below all of them, by an unknown amount)."""
    key = (id(query), retriever, how)
    if key not in _NORMALISED:
        hits = query.hits[retriever]
        values = NORMALISATIONS[how]([hit.score for hit in hits], retriever) if hits else [0.0]
        scores = {hit.chunk_id: value for hit, value in zip(hits, values, strict=False)}
        _NORMALISED[key] = scores, min(values)
    return _NORMALISED[key]


# --- fusions ------------------------------------------------------------------------------------


def _documents(chunk_ids: Sequence[str], doc_of: dict[str, str]) -> list[str]:
    return documents_in_order(doc_of[chunk_id] for chunk_id in chunk_ids)[:KEEP]


def _doc_of(query: CandidateQuery) -> dict[str, str]:
    if id(query) not in _DOC_OF:
        _DOC_OF[id(query)] = {
            hit.chunk_id: hit.doc_id for mode in ("vector", "lexical") for hit in query.hits[mode]
        }
    return _DOC_OF[id(query)]


def single(retriever: str) -> Fusion:
    def rank(query: CandidateQuery) -> list[str]:
        return documents_in_order(hit.doc_id for hit in query.hits[retriever])[:KEEP]

    return rank


def api_hybrid(query: CandidateQuery) -> list[str]:
    """What the API's hybrid mode returned (for checking that ``rrf`` reproduces it)."""
    return documents_in_order(hit.doc_id for hit in query.hits["hybrid"])[:KEEP]


def rrf(k: int, vector_weight: float, lexical_weight: float) -> Fusion:
    weights = {"vector": vector_weight, "lexical": lexical_weight}

    def rank(query: CandidateQuery) -> list[str]:
        lists = {name: [hit.chunk_id for hit in query.hits[name]] for name in weights if weights[name] > 0}
        fused = reciprocal_rank_fusion(lists, weights, k)
        return _documents([item.id for item in fused], _doc_of(query))

    return rank


def _combined(query: CandidateQuery, how: str, alpha: float) -> list[str]:
    vector, vector_floor = _normalised(query, "vector", how)
    lexical, lexical_floor = _normalised(query, "lexical", how)
    scores = {
        chunk_id: alpha * vector.get(chunk_id, vector_floor)
        + (1 - alpha) * lexical.get(chunk_id, lexical_floor)
        for chunk_id in vector.keys() | lexical.keys()
    }

    # A chunk one retriever missed ties with that retriever's last one: the chunk returned by
    # more retrievers goes first, then the smaller id, so that set order decides nothing.
    def order(chunk_id: str) -> tuple[float, int, str]:
        return (-scores[chunk_id], -((chunk_id in vector) + (chunk_id in lexical)), chunk_id)

    ordered = sorted(scores, key=order)
    return _documents(ordered, _doc_of(query))


def convex(how: str, alpha: float) -> Fusion:
    def rank(query: CandidateQuery) -> list[str]:
        return _combined(query, how, alpha)

    return rank


def adaptive(prior: float, power: float = STANDOUT_POWER) -> Fusion:
    """Production's convex fusion (``query_api.fusion.convex_fusion``): min-max normalised
    scores, weighted per query by how far each retriever's best hit stands out, pulled halfway
    to ``prior``."""
    priors = {"vector": prior, "lexical": 1.0 - prior}

    def rank(query: CandidateQuery) -> list[str]:
        lists = {
            name: [(hit.chunk_id, hit.score) for hit in query.hits[name]]
            for name in priors
            if priors[name] > 0
        }
        fused = convex_fusion(lists, priors, power=power)
        return _documents([item.id for item in fused], _doc_of(query))

    return rank


def candidates(dumped: dict[str, Any]) -> dict[str, Fusion]:
    """Every fusion to compare, by a name that says its parameters; the one the dumps were made
    with is marked "(default)" (dumps older than the convex fusion were made with RRF)."""
    found: dict[str, Fusion] = {
        "vector": single("vector"),
        "lexical": single("lexical"),
        "api hybrid": api_hybrid,
    }
    if dumped.get("hybrid_fusion", "rrf") == "convex":
        prior = dumped["hybrid_vector_prior"]
        found[f"adaptive prior={prior:g} p={STANDOUT_POWER:g} (default)"] = adaptive(prior)
    else:
        default = (dumped["rrf_k"], dumped["hybrid_vector_weight"], dumped["hybrid_lexical_weight"])
        found[f"rrf k={default[0]} v={default[1]:g} l={default[2]:g} (default)"] = rrf(*default)
    for k in RRF_KS:
        for weight in RRF_LEXICAL_WEIGHTS:
            found.setdefault(f"rrf k={k} v=1 l={weight:g}", rrf(k, 1.0, weight))
    for how in NORMALISATIONS:
        for alpha in ALPHAS:
            found[f"convex {how} α={alpha:g}"] = convex(how, alpha)
    for prior in (0.3, 0.5, 0.7):
        for power in (1.0, 2.0):
            found[f"adaptive prior={prior:g} p={power:g}"] = adaptive(prior, power)
    return found


# --- scoring and choosing -------------------------------------------------------------------------


@dataclass
class Scored:
    name: str
    #: set → metric → mean over its queries
    metrics: dict[str, dict[str, float]]


def score(fusions: dict[str, Fusion], sets: Sequence[CandidateSet]) -> list[Scored]:
    scored = []
    for name, fusion in fusions.items():
        per_set = {}
        for candidate_set in sets:
            rankings = [fusion(query) for query in candidate_set.queries]
            judged = [query.relevance for query in candidate_set.queries]
            values = per_query_scores(rankings, judged)
            per_set[candidate_set.name] = {metric: statistics.fmean(values[metric]) for metric in METRICS}
        scored.append(Scored(name, per_set))
    return scored


def floors(scored: Sequence[Scored]) -> dict[str, dict[str, float]]:
    """set → metric → the better single retriever's value."""
    by_name = {s.name: s for s in scored}
    return {
        set_name: {
            metric: max(
                by_name["vector"].metrics[set_name][metric], by_name["lexical"].metrics[set_name][metric]
            )
            for metric in METRICS
        }
        for set_name in by_name["vector"].metrics
    }


def shortfall(result: Scored, floor: dict[str, dict[str, float]], sets: Sequence[str]) -> float:
    """The worst margin over the given sets and checked metrics (negative: below the floor)."""
    return min(result.metrics[s][m] - floor[s][m] for s in sets for m in METRICS)


def mean_ndcg(result: Scored, sets: Sequence[str]) -> float:
    return statistics.fmean(result.metrics[s]["ndcg@10"] for s in sets)


def choose(scored: Sequence[Scored], floor: dict[str, dict[str, float]], sets: Sequence[str]) -> Scored:
    """The fusion that passes on ``sets`` with the best mean nDCG@10, else the least shortfall."""
    fusions = [s for s in scored if s.name not in SINGLES]
    passing = [s for s in fusions if shortfall(s, floor, sets) >= -TOLERANCE]
    if passing:
        return max(passing, key=lambda s: mean_ndcg(s, sets))
    return max(fusions, key=lambda s: shortfall(s, floor, sets))


def held_out(
    scored: Sequence[Scored], floor: dict[str, dict[str, float]], sets: Sequence[str]
) -> list[dict[str, Any]]:
    """For each set: the fusion chosen on the others, and how it does on the one held out."""
    rows: list[dict[str, Any]] = []
    if len(sets) < 2:
        return rows
    for out in sets:
        others = [s for s in sets if s != out]
        chosen = choose(scored, floor, others)
        rows.append(
            {
                "held_out": out,
                "chosen": chosen.name,
                **{metric: chosen.metrics[out][metric] for metric in METRICS},
                "margin": shortfall(chosen, floor, [out]),
            }
        )
    return rows


# --- robustness: does a neighbourhood of the parameter pass too? -------------------------------

#: Fine grids around the families that passed on the coarse one: family → parameter name →
#: (value, fusion name, fusion), in the parameter's order.
Grid = tuple[str, list[tuple[float, str, Fusion]]]


def _steps(low: float, high: float, step: float) -> list[float]:
    return [round(low + step * i, 3) for i in range(round((high - low) / step) + 1)]


def fine_grids() -> dict[str, Grid]:
    grids: dict[str, Grid] = {}
    for how, low, high in (("minmax", 0.30, 0.56), ("zscore", 0.30, 0.60), ("theoretical", 0.64, 0.90)):
        grids[f"convex {how}"] = (
            "α",
            [(a, f"convex {how} α={a:g}", convex(how, a)) for a in _steps(low, high, 0.02)],
        )
    grids[f"adaptive p={STANDOUT_POWER:g}"] = (
        "prior",
        [(p, f"adaptive prior={p:g} p={STANDOUT_POWER:g}", adaptive(p)) for p in _steps(0.10, 0.70, 0.05)],
    )
    return grids


def _passing_run(
    values: Sequence[tuple[float, Scored]], floor: dict[str, dict[str, float]], sets: Sequence[str]
) -> list[float]:
    """The longest run of neighbouring parameter values that all pass on ``sets``."""
    best: list[float] = []
    run: list[float] = []
    for value, result in values:
        run = [*run, value] if shortfall(result, floor, sets) >= -TOLERANCE else []
        if len(run) > len(best):
            best = run
    return best


def robustness(
    grids: dict[str, Grid], scored: Sequence[Scored], floor: dict[str, dict[str, float]], sets: Sequence[str]
) -> list[dict[str, Any]]:
    """Per family: the run of parameter values that pass on every set, its middle, the worst margin
    over the run; and, with each set held out, the middle of the run that passes on the others,
    scored on the held-out set (a choice by the middle, not by the best mean, is what a default
    that must hold on unseen data would make)."""
    by_name = {s.name: s for s in scored}
    rows = []
    for family, (parameter, grid) in grids.items():
        values = [(value, by_name[name]) for value, name, _ in grid]
        run = _passing_run(values, floor, sets)
        row: dict[str, Any] = {
            "family": family,
            "parameter": parameter,
            "grid": [value for value, _ in values],
            "passing": run,
            "middle": run[len(run) // 2] if run else None,
            "worst_margin_over_run": min(
                (shortfall(result, floor, sets) for value, result in values if value in run), default=None
            ),
            "held_out": [],
        }
        for out in sets:
            others = [s for s in sets if s != out]
            chosen_run = _passing_run(values, floor, others)
            if not chosen_run:
                row["held_out"].append({"held_out": out, "chosen": None, "margin": None})
                continue
            middle = chosen_run[len(chosen_run) // 2]
            result = dict(values)[middle]
            row["held_out"].append(
                {"held_out": out, "chosen": middle, "margin": shortfall(result, floor, [out])}
            )
        rows.append(row)
    return rows


# --- latency: what the production fusions cost on real candidate lists ----------------------


def fusion_latency(
    sets: Sequence[CandidateSet], queries: int = 400, rounds: int = 25, limit: int = 10, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Each production fusion's time per call (µs: p50, p95, mean) on the candidate lists of
    ``queries`` queries drawn from every set, called as a search calls it (a page of ``limit``);
    the fusions alternate call by call so that the machine's load falls on both alike."""
    rng = random.Random(seed)
    pool = [query for candidate_set in sets for query in candidate_set.queries]
    drawn = rng.sample(pool, min(queries, len(pool)))
    scored_lists = [
        {name: [(hit.chunk_id, hit.score) for hit in query.hits[name]] for name in ("vector", "lexical")}
        for query in drawn
    ]
    id_lists = [
        {name: [item_id for item_id, _ in hits] for name, hits in lists.items()} for lists in scored_lists
    ]
    priors = {"vector": 0.35, "lexical": 0.65}
    weights = {"vector": 1.0, "lexical": 3.0}
    calls: dict[str, Callable[[int], object]] = {
        "convex": lambda i: convex_fusion(scored_lists[i], priors, limit=limit),
        "rrf": lambda i: reciprocal_rank_fusion(id_lists[i], weights, 60, limit=limit),
    }
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for index in range(len(drawn)):
            for name, call in calls.items():
                started = time.perf_counter_ns()
                call(index)
                times[name].append((time.perf_counter_ns() - started) / 1000)
    return {
        name: {
            "p50_us": statistics.median(values),
            "p95_us": sorted(values)[int(0.95 * len(values))],
            "mean_us": statistics.fmean(values),
            "calls": len(values),
        }
        for name, values in times.items()
    }


# --- report -----------------------------------------------------------------------------------


def _family(name: str) -> str:
    """A fusion's name up to its parameters: "convex minmax α=0.3" → "convex minmax"."""
    words = name.split(" ")
    return " ".join(word for word in words[: next((i for i, w in enumerate(words) if "=" in w), len(words))])


def _family_best(
    scored: Sequence[Scored], floor: dict[str, dict[str, float]], sets: Sequence[str]
) -> list[Scored]:
    """The chosen fusion of each family."""
    families: dict[str, list[Scored]] = {}
    for result in scored:
        if result.name not in SINGLES:
            families.setdefault(_family(result.name), []).append(result)
    return [choose(members, floor, sets) for members in families.values()]


def _table(
    title: str, rows: Sequence[Scored], floor: dict[str, dict[str, float]], sets: Sequence[str]
) -> Table:
    table = Table(title=title)
    table.add_column("fusion")
    for set_name in sets:
        for metric in METRICS:
            table.add_column(f"{set_name}\n{metric}", justify="right")
    table.add_column("worst\nmargin", justify="right")
    table.add_column("mean\nnDCG@10", justify="right")
    for result in rows:
        cells = []
        for set_name in sets:
            for metric in METRICS:
                value = result.metrics[set_name][metric]
                low = value < floor[set_name][metric] - TOLERANCE
                cells.append(f"[red]{value:.3f}[/]" if low else f"{value:.3f}")
        table.add_row(
            result.name, *cells, f"{shortfall(result, floor, sets):+.3f}", f"{mean_ndcg(result, sets):.3f}"
        )
    return table


def _newest_run() -> str:
    dumps = sorted(RESULTS.glob("eval-candidates-*.json.gz"), key=lambda p: p.stat().st_mtime)
    if not dumps:
        raise SystemExit(f"no candidate dumps under {RESULTS}: run `ragstream eval --beir …` first")
    return load_candidates(dumps[-1]).run_id


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dumps", nargs="*", type=Path, help="candidate dumps (default: the newest run's)")
    parser.add_argument("--run", help="the run id whose dumps to read")
    parser.add_argument(
        "--fine",
        action="store_true",
        help="also score fine grids around each family (minutes) for robustness",
    )
    parser.add_argument(
        "--latency",
        action="store_true",
        help="only time the production fusions (convex, RRF) on the dumps' candidate lists",
    )
    args = parser.parse_args(argv)
    paths = list(args.dumps) or sorted(RESULTS.glob(f"eval-candidates-{args.run or _newest_run()}-*.json.gz"))
    sets = [load_candidates(path) for path in paths]
    names = [s.name for s in sets]
    console = Console()
    console.print(f"{sum(len(s.queries) for s in sets)} queries in {len(sets)} sets: {', '.join(names)}")
    if args.latency:
        for name, figures in fusion_latency(sets).items():
            console.print(
                f"{name}: p50 {figures['p50_us']:.1f} µs, p95 {figures['p95_us']:.1f} µs, "
                f"mean {figures['mean_us']:.1f} µs over {figures['calls']} calls"
            )
        return

    fusions = candidates(sets[0].settings)
    grids = fine_grids() if args.fine else {}
    for _, grid in grids.values():
        fusions.update({name: fusion for _, name, fusion in grid})
    scored = score(fusions, sets)
    floor = floors(scored)
    by_name = {s.name: s for s in scored}
    default = next(s for s in scored if s.name.endswith("(default)"))
    winner = choose(scored, floor, names)
    shown = [by_name["vector"], by_name["lexical"], by_name["api hybrid"], default]
    for best in [winner, *_family_best(scored, floor, names)]:
        if best not in shown:
            shown.append(best)
    console.print(
        _table("fusions on every set (red: below max(vector, lexical) − 0.005)", shown, floor, names)
    )
    passing = [s for s in scored if s.name not in SINGLES and shortfall(s, floor, names) >= -TOLERANCE]
    console.print(f"{len(passing)} of {len(scored) - 3} fusions pass on every set; winner: {winner.name}")
    held = held_out(scored, floor, names)
    for row in held:
        console.print(
            f"chosen without {row['held_out']}: {row['chosen']} → on {row['held_out']} nDCG@10 "
            f"{row['ndcg@10']:.3f}, recall@5 {row['recall@5']:.3f}, margin {row['margin']:+.3f}"
        )

    robust = robustness(grids, scored, floor, names)
    for row in robust:
        run = row["passing"]
        span = f"{run[0]:g}–{run[-1]:g}" if run else "none"
        worst = row["worst_margin_over_run"]
        console.print(
            f"{row['family']}: passes on every set for {row['parameter']} {span} "
            f"({len(run)} of {len(row['grid'])} grid values), middle {row['middle']}, worst margin "
            f"over that run {'n/a' if worst is None else format(worst, '+.3f')}"
        )
        for held in row["held_out"]:
            margin = "n/a" if held["margin"] is None else f"{held['margin']:+.3f}"
            console.print(f"    middle without {held['held_out']}: {held['chosen']} → margin there {margin}")

    started = datetime.now(UTC)
    path = save_json(
        {
            "source": "fusion-study",
            "started_at": started.isoformat(),
            "dumps": [str(p) for p in paths],
            "tolerance": TOLERANCE,
            "floors": floor,
            "winner": winner.name,
            "passing": [s.name for s in passing],
            "held_out": held,
            "robustness": robust,
            "fusions": {s.name: s.metrics for s in scored},
        },
        RESULTS,
        f"fusion-study-{new_run_id(started)}",
    )
    console.print(f"saved {path}")


if __name__ == "__main__":
    main()
