"""Event and record models shared by every ragstream process, and its settings."""

from schemas._validation import QueryText
from schemas.events import SCHEMA_VERSION, DocumentEvent, EventOp, InvalidEvent
from schemas.settings import Settings

__all__ = ["SCHEMA_VERSION", "DocumentEvent", "EventOp", "InvalidEvent", "QueryText", "Settings"]
