"""Retrieval evaluation on real data: Wikipedia short descriptions as queries, their articles as
the one relevant document, and any data set in the BEIR layout (graded judgements), indexed
through the normal pipeline and searched through the API; or the cases that feedback confirmed,
searched on the live index."""

from evaluation.beir import BeirSet, InvalidBeirSet, load_beir
from evaluation.candidates import CandidateSet, load_candidates
from evaluation.cases import EvalCase, build_cases
from evaluation.feedback_cases import FeedbackCases, cases_from_feedback
from evaluation.from_feedback import (
    FeedbackEvaluationReport,
    NoFeedbackCases,
    run_feedback_evaluation,
)
from evaluation.ranking_metrics import (
    ndcg_at,
    per_query_scores,
    recall_at,
    reciprocal_rank,
    summarize,
)
from evaluation.report import print_feedback_report, print_report
from evaluation.run import EvaluationOptions, EvaluationReport, run_evaluation
from evaluation.sets import (
    EvalSet,
    SetsReport,
    beir_eval_set,
    run_sets_evaluation,
    wikipedia_eval_set,
)
from evaluation.sets_report import print_sets_report, sets_markdown

__all__ = [
    "BeirSet",
    "CandidateSet",
    "EvalCase",
    "EvalSet",
    "EvaluationOptions",
    "EvaluationReport",
    "FeedbackCases",
    "FeedbackEvaluationReport",
    "InvalidBeirSet",
    "NoFeedbackCases",
    "SetsReport",
    "beir_eval_set",
    "build_cases",
    "cases_from_feedback",
    "load_beir",
    "load_candidates",
    "ndcg_at",
    "per_query_scores",
    "print_feedback_report",
    "print_report",
    "print_sets_report",
    "recall_at",
    "reciprocal_rank",
    "run_evaluation",
    "run_feedback_evaluation",
    "run_sets_evaluation",
    "sets_markdown",
    "summarize",
    "wikipedia_eval_set",
]
