"""The offline fusion study's fusions, on hand-made candidate lists."""

from __future__ import annotations

from bench import fusion_study
from evaluation.candidates import CandidateQuery
from evaluation.runner import ChunkHit


def query(vector: list[tuple[str, float]], lexical: list[tuple[str, float]]) -> CandidateQuery:
    """Chunk "d1#0" belongs to document "d1"."""

    def hits(found: list[tuple[str, float]]) -> list[ChunkHit]:
        return [ChunkHit(chunk, chunk.split("#")[0], score) for chunk, score in found]

    return CandidateQuery("q", "text", {"d1": 1}, {"vector": hits(vector), "lexical": hits(lexical)})


CANDIDATES = query(
    vector=[("d1#0", 0.9), ("d2#0", 0.8), ("d3#0", 0.4), ("d1#1", 0.3)],
    lexical=[("d3#0", 12.0), ("d4#0", 7.0), ("d2#0", 1.0)],
)


def test_a_convex_weight_of_one_or_zero_reproduces_one_retriever():
    for how in fusion_study.NORMALISATIONS:
        assert fusion_study.convex(how, 1.0)(CANDIDATES)[:3] == ["d1", "d2", "d3"]
        assert fusion_study.convex(how, 0.0)(CANDIDATES)[:3] == ["d3", "d4", "d2"]


def test_a_document_first_in_both_lists_stays_first_in_every_fusion():
    both = query(vector=[("d1#0", 0.9), ("d2#0", 0.5)], lexical=[("d1#0", 9.0), ("d3#0", 2.0)])
    for name, fusion in fusion_study.candidates(
        {"rrf_k": 60, "hybrid_vector_weight": 1, "hybrid_lexical_weight": 3}
    ).items():
        if name not in fusion_study.SINGLES:
            assert fusion(both)[0] == "d1", name


def test_chunks_of_one_document_count_once_at_its_best_place():
    assert fusion_study.single("vector")(CANDIDATES) == ["d1", "d2", "d3"]


def test_theoretical_bounds_map_cosine_from_minus_one_to_one_and_bm25_by_the_best_score():
    assert fusion_study.NORMALISATIONS["theoretical"]([1.0, 0.0, -1.0], "vector") == [1.0, 0.5, 0.0]
    assert fusion_study.NORMALISATIONS["theoretical"]([8.0, 2.0], "lexical") == [1.0, 0.25]


def test_the_latency_bench_times_both_production_fusions_on_every_call():
    from evaluation.candidates import CandidateSet

    timed = fusion_study.fusion_latency([CandidateSet("tiny", "run", {}, 4, [CANDIDATES])], rounds=3)
    assert set(timed) == {"convex", "rrf"}
    assert all(figures["calls"] == 3 and figures["p50_us"] > 0 for figures in timed.values())


def test_the_studys_adaptive_fusion_is_productions_and_ranks_documents():
    assert fusion_study.adaptive(1.0)(CANDIDATES)[:3] == ["d1", "d2", "d3"]
    assert fusion_study.adaptive(0.0)(CANDIDATES)[:3] == ["d3", "d4", "d2"]
