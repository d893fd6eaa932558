"""The convex fusion's invariants, on hand-made candidate lists."""

from __future__ import annotations

import random

import pytest

from query_api.fusion import convex_fusion, standout

VECTOR = [("a", 0.82), ("b", 0.80), ("c", 0.41), ("d", 0.40), ("e", 0.12)]
LEXICAL = [("c", 14.0), ("f", 9.5), ("a", 3.0), ("g", 2.0)]


def ids(hits: list[tuple[str, float]]) -> list[str]:
    return [item_id for item_id, _ in hits]


def fused_ids(vector_prior: float, **lists: list[tuple[str, float]]) -> list[str]:
    priors = {"vector": vector_prior, "lexical": 1.0 - vector_prior}
    return [item.id for item in convex_fusion(lists, priors)]


def test_a_document_first_in_both_lists_stays_first_whatever_the_prior():
    lexical = [("a", 20.0), *LEXICAL]
    for prior in (0.01, 0.2, 0.35, 0.5, 0.8, 0.99):
        fused = convex_fusion({"vector": VECTOR, "lexical": lexical}, {"vector": prior, "lexical": 1 - prior})
        assert fused[0].id == "a" and fused[0].score == pytest.approx(1.0)


def test_a_prior_that_zeroes_one_retriever_reproduces_the_others_order_exactly():
    assert fused_ids(1.0, vector=VECTOR, lexical=LEXICAL) == ids(VECTOR)
    assert fused_ids(0.0, vector=VECTOR, lexical=LEXICAL) == ids(LEXICAL)


def test_a_list_of_equal_scores_keeps_its_order():
    flat = [("z", 1.0), ("y", 1.0), ("x", 1.0)]
    assert fused_ids(0.0, vector=VECTOR, lexical=flat) == ["z", "y", "x"]


def test_a_chunk_one_retriever_missed_counts_zero_there():
    lists = {"vector": VECTOR, "lexical": LEXICAL}
    fused = {item.id: item for item in convex_fusion(lists, {"vector": 0.5, "lexical": 0.5})}
    assert fused["b"].ranks == {"vector": 2} and fused["f"].ranks == {"lexical": 2}
    # Each retriever's last hit is normalised to 0, the same as what it missed: "e" (vector's
    # last) and "g" (lexical's last) score nothing, and the better best rank goes first.
    assert fused["e"].score == fused["g"].score == 0.0
    order = list(fused)
    assert order.index("g") < order.index("e")


def test_between_two_equal_scores_the_chunk_both_retrievers_returned_goes_first():
    vector = [("p", 1.0), ("q", 0.0)]
    lexical = [("r", 1.0), ("p", 0.0)]
    fused = convex_fusion({"vector": vector, "lexical": lexical}, {"vector": 0.5, "lexical": 0.5})
    assert [(item.id, item.score) for item in fused] == [("p", 0.5), ("r", 0.5), ("q", 0.0)]


def test_scores_stay_within_zero_and_one():
    rng = random.Random(7)
    for _ in range(200):
        vector = sorted(
            ((f"c{rng.randrange(60)}", rng.uniform(-1, 1)) for _ in range(40)), key=lambda h: -h[1]
        )
        lexical = sorted(
            ((f"c{rng.randrange(60)}", rng.uniform(0, 30)) for _ in range(40)), key=lambda h: -h[1]
        )
        prior = rng.random()
        fused = convex_fusion({"vector": vector, "lexical": lexical}, {"vector": prior, "lexical": 1 - prior})
        assert all(0.0 <= item.score <= 1.0 for item in fused)
        assert [item.score for item in fused] == sorted((item.score for item in fused), reverse=True)


def test_the_first_limit_items_are_the_whole_fusion_cut_there():
    lists = {"vector": VECTOR, "lexical": LEXICAL}
    priors = {"vector": 0.35, "lexical": 0.65}
    whole = convex_fusion(lists, priors)
    for limit in (1, 3, len(whole), len(whole) + 5):
        assert convex_fusion(lists, priors, limit=limit) == whole[:limit]


def test_the_order_does_not_depend_on_the_order_of_the_retrievers():
    priors = {"vector": 0.35, "lexical": 0.65}
    one = convex_fusion({"vector": VECTOR, "lexical": LEXICAL}, priors)
    other = convex_fusion({"lexical": LEXICAL, "vector": VECTOR}, priors)
    assert [item.id for item in one] == [item.id for item in other]


def test_a_retriever_whose_best_hit_stands_out_gets_more_weight():
    # The same two lists; only which one has a clear winner changes.
    sure = [("s", 10.0), ("t", 1.0), ("u", 0.9), ("v", 0.8)]
    unsure = [("t", 1.0), ("s", 0.99), ("v", 0.98), ("u", 0.97)]
    assert fused_ids(0.5, vector=sure, lexical=unsure)[0] == "s"
    assert fused_ids(0.5, vector=unsure, lexical=sure)[0] == "s"
    assert standout([10.0, 1.0, 0.9, 0.8]) > standout([1.0, 0.99, 0.98, 0.97])


def test_an_empty_list_leaves_the_other_in_its_order():
    assert fused_ids(0.5, vector=VECTOR, lexical=[]) == ids(VECTOR)


def test_priors_must_name_every_retriever_and_not_all_be_zero():
    with pytest.raises(ValueError, match="no weight"):
        convex_fusion({"vector": VECTOR, "lexical": LEXICAL}, {"vector": 1.0})
    with pytest.raises(ValueError, match="positive weight"):
        convex_fusion({"vector": VECTOR, "lexical": LEXICAL}, {"vector": 0.0, "lexical": 0.0})


def test_zero_rrf_weights_are_refused_only_where_rrf_fuses() -> None:
    from query_api import create_app
    from schemas import Settings

    without_weights = Settings(hybrid_vector_weight=0, hybrid_lexical_weight=0)
    create_app(without_weights.model_copy(update={"hybrid_fusion": "convex"}))
    with pytest.raises(ValueError, match="cannot both be 0"):
        create_app(without_weights.model_copy(update={"hybrid_fusion": "rrf"}))
