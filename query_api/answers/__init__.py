"""Answers grounded in the index: retrieve, prompt, generate, cite (served on ``POST /v1/answer``
by ``query_api.routes.answers``)."""

from query_api.answers.answerer import Answerer
from query_api.answers.models import AnswerRequest, AnswerResponse

__all__ = ["AnswerRequest", "AnswerResponse", "Answerer"]
