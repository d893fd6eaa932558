"""The HTTP query API over the continuously updated index."""

from query_api.app import create_app

__all__ = ["create_app"]
