"""What can go wrong while answering, one root exception with small subclasses.

::

    AnswerError
    ├── UnknownTemplate          the request names no packaged prompt template      (400)
    ├── GeneratorNotConfigured   a generator was asked for whose settings are unset (400)
    ├── GeneratorUnavailable     the local model could not be loaded                (503)
    └── GenerationFailed         the OpenAI-compatible endpoint failed or refused   (502)
"""

from __future__ import annotations


class AnswerError(Exception):
    """Root of the answer errors; ``status_code`` is what the HTTP API answers with."""

    status_code = 500
    #: Whether asking again, unchanged, may succeed.
    retriable = False


class UnknownTemplate(AnswerError):
    status_code = 400

    def __init__(self, reference: str, available: list[str]) -> None:
        self.reference = reference
        self.available = available
        super().__init__(f"no prompt template {reference!r}; available: {', '.join(available)}")


class GeneratorNotConfigured(AnswerError):
    status_code = 400

    def __init__(self, generator: str, setting: str) -> None:
        self.generator = generator
        self.setting = setting
        super().__init__(f"the {generator} generator is not configured: set {setting}")


class GeneratorUnavailable(AnswerError):
    status_code = 503

    def __init__(self, generator: str, reason: str) -> None:
        self.generator = generator
        super().__init__(f"the {generator} generator is unavailable: {reason}")


class GenerationFailed(AnswerError):
    status_code = 502

    def __init__(self, generator: str, reason: str, *, retriable: bool) -> None:
        self.generator = generator
        self.retriable = retriable
        super().__init__(f"the {generator} generator failed: {reason}")
