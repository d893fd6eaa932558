"""Retrieval evaluation on real data: Wikipedia short descriptions as queries, their articles as
the one relevant document, indexed through the normal pipeline and searched through the API."""

from query_api.evaluation.cases import EvalCase, build_cases
from query_api.evaluation.metrics import ndcg_at, recall_at, reciprocal_rank, summarize
from query_api.evaluation.report import print_report
from query_api.evaluation.run import EvaluationOptions, EvaluationReport, run_evaluation

__all__ = [
    "EvalCase",
    "EvaluationOptions",
    "EvaluationReport",
    "build_cases",
    "ndcg_at",
    "print_report",
    "recall_at",
    "reciprocal_rank",
    "run_evaluation",
    "summarize",
]
