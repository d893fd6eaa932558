"""The one way every ragstream process opens its Chroma client: with the token of the settings."""

from __future__ import annotations

import chromadb
import httpx
from chromadb.api import AsyncClientAPI
from chromadb.errors import ChromaAuthError

from schemas.settings_groups import ChromaSettings

__all__ = ["ChromaTokenRefused", "open_chroma"]

#: The setting a refused client must fix.
TOKEN_SETTING = "RAGSTREAM_CHROMA_TOKEN"


class ChromaTokenRefused(Exception):
    """The Chroma server refused this process's token, or its lack of one.

    Not retriable: only a restart with the server's token in ``RAGSTREAM_CHROMA_TOKEN`` helps.
    Raised from the chromadb (or HTTP) error that said so.
    """

    retriable = False

    def __init__(self, url: str, token_sent: bool) -> None:
        self.url = url
        self.token_sent = token_sent
        if token_sent:
            problem = f"refused the token in {TOKEN_SETTING}; check that it is the server's token"
        else:
            problem = f"requires a token and none was sent; set {TOKEN_SETTING} to the server's token"
        super().__init__(f"the Chroma server at {url} {problem}")


async def open_chroma(settings: ChromaSettings) -> AsyncClientAPI:
    """An async client of the Chroma server at ``settings.chroma_url``, sending
    ``settings.chroma_token`` (when set) as ``Authorization: Bearer``.

    Raises ``ChromaTokenRefused`` when the server refuses the token or its absence.

    chromadb 1.5.9's async client shares one HTTP connection pool, with the headers of the first
    client made on the event loop, among all the clients made on that loop, and refuses a second
    client of one server with other client settings; so a process opens every Chroma client
    through this function, from the same settings (chromadb's default client settings otherwise).
    """
    headers = None
    if settings.chroma_token is not None:
        # Passed as a header: chromadb's async client ignores chroma_client_auth_provider (its
        # sync client reads it, the async one never does).
        headers = {"Authorization": f"Bearer {settings.chroma_token.get_secret_value()}"}
    try:
        # Making the client already asks the server for its tenant and database.
        return await chromadb.AsyncHttpClient(
            host=settings.chroma_host,
            port=settings.chroma_port,
            headers=headers,
        )
    except Exception as exc:
        if _refused(exc):
            raise ChromaTokenRefused(settings.chroma_url, token_sent=headers is not None) from exc
        raise


def _refused(exc: Exception) -> bool:
    if isinstance(exc, ChromaAuthError):
        return True
    # A 401 or 403 whose body chromadb cannot read (a proxy in front of Chroma that checks the
    # token) comes as a bare Exception raised while handling httpx's HTTPStatusError.
    context = exc.__context__
    return isinstance(context, httpx.HTTPStatusError) and context.response.status_code in (401, 403)
