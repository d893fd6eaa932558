"""Answers grounded in the index: retrieve, prompt, generate, cite (``POST /v1/answer``)."""

from query_api.answers.answerer import Answerer
from query_api.answers.models import AnswerRequest, AnswerResponse
from query_api.answers.routes import router

__all__ = ["AnswerRequest", "AnswerResponse", "Answerer", "router"]
