"""Retrieval evaluation on real data: Wikipedia short descriptions as queries, their articles as
the one relevant document, indexed through the normal pipeline and searched through the API; or
the cases that feedback confirmed, searched on the live index."""

from query_api.evaluation.cases import EvalCase, build_cases
from query_api.evaluation.feedback_cases import FeedbackCases, cases_from_feedback
from query_api.evaluation.from_feedback import (
    FeedbackEvaluationReport,
    NoFeedbackCases,
    run_feedback_evaluation,
)
from query_api.evaluation.metrics import ndcg_at, recall_at, reciprocal_rank, summarize
from query_api.evaluation.report import print_feedback_report, print_report
from query_api.evaluation.run import EvaluationOptions, EvaluationReport, run_evaluation

__all__ = [
    "EvalCase",
    "EvaluationOptions",
    "EvaluationReport",
    "FeedbackCases",
    "FeedbackEvaluationReport",
    "NoFeedbackCases",
    "build_cases",
    "cases_from_feedback",
    "ndcg_at",
    "print_feedback_report",
    "print_report",
    "recall_at",
    "reciprocal_rank",
    "run_evaluation",
    "run_feedback_evaluation",
    "summarize",
]
