"""Chroma's HTTP server, the only process that touches its persist directory.

Without a token it is ``chroma run``, the Rust server shipped in the chromadb package. That server
cannot check a token: chromadb 1.5.9 wires its requests to an authenticator that allows every
request, and it ignores Chroma's ``CHROMA_SERVER_AUTHN_*`` settings and any auth keys in its config
file. With a token it is chromadb's Python server (its FastAPI app under uvicorn) with Chroma's own
token authentication. Both keep their data through the same Rust bindings in the same layout, so
one data directory can be served either way.
"""

from __future__ import annotations

import string
import sys
from pathlib import Path

import httpx

from deploy._process import ManagedProcess

__all__ = ["ChromaServer"]

#: What Chroma's token authentication accepts in a token (chromadb.auth.token_authn).
TOKEN_CHARACTERS = frozenset(string.ascii_letters + string.digits + string.punctuation)

_HOST = "127.0.0.1"


class ChromaServer:
    """A Chroma server on 127.0.0.1 with its data in ``state_dir/chroma-<port>/``.

    With ``token``, every request but the heartbeat and version must carry it as
    ``Authorization: Bearer <token>``; others are answered 403.
    """

    def __init__(self, state_dir: Path, port: int, token: str | None = None) -> None:
        if token is not None and (not token or not set(token) <= TOKEN_CHARACTERS):
            raise ValueError("a Chroma token must be ASCII letters, digits and punctuation (no spaces)")
        self.port = port
        self.home = Path(state_dir) / f"chroma-{port}"
        self.data_dir = self.home / "data"
        env = {"ANONYMIZED_TELEMETRY": "False", "NO_COLOR": "1"}
        if token is None:
            # The CLI installed with the chromadb package, in the same environment as this interpreter.
            chroma = Path(sys.executable).parent / "chroma"
            args = [str(chroma), "run", "--path", str(self.data_dir), "--host", _HOST, "--port", str(port)]
        else:
            entry = "from deploy.chroma import serve_with_token; serve_with_token()"
            args = [sys.executable, "-c", entry, _HOST, str(port)]
            # The token goes through the environment: a command line is readable by every user.
            env |= {
                "IS_PERSISTENT": "TRUE",
                "PERSIST_DIRECTORY": str(self.data_dir.resolve()),
                "CHROMA_SERVER_AUTHN_PROVIDER": "chromadb.auth.token_authn.TokenAuthenticationServerProvider",
                "CHROMA_SERVER_AUTHN_CREDENTIALS": token,
                "CHROMA_AUTH_TOKEN_TRANSPORT_HEADER": "Authorization",
            }
        self._process = ManagedProcess(
            f"chroma server on port {port}",
            args,
            log_file=self.home / "chroma.log",
            pid_file=self.home / "chroma.pid",
            env=env,
        )

    @property
    def url(self) -> str:
        return f"http://{_HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def start(self, timeout: float = 60.0) -> None:
        """Start the server (unless it runs already) and wait until its heartbeat answers."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._process.start()
        self._process.wait_until(self._heartbeat, timeout, f"Chroma server at {self.url}")

    def stop(self, timeout: float = 30.0) -> None:
        """Shut the server down (SIGTERM), killing it if it takes longer than `timeout`."""
        self._process.stop(timeout)

    def kill(self) -> None:
        """SIGKILL the server, as a crash would."""
        self._process.kill()

    def _heartbeat(self) -> bool:
        # Chroma 1.x serves /api/v2 and answers 410 on /api/v1; older servers only know v1.
        # The heartbeat needs no token.
        for path in ("/api/v2/heartbeat", "/api/v1/heartbeat"):
            response = httpx.get(self.url + path, timeout=2.0, trust_env=False)
            if response.status_code == 200:
                return True
        return False


def serve_with_token() -> None:
    """Run chromadb's Python server on the host and port given as arguments, configured by the
    environment ``ChromaServer`` sets (the process of a server with a token)."""
    import uvicorn

    host, port = sys.argv[1:3]
    # Keep-alive longer than httpx's (5 s), so that a client never reuses a connection at the
    # moment the server closes it. One worker: Chroma's storage takes one process per directory.
    uvicorn.run("chromadb.app:app", host=host, port=int(port), log_level="warning", timeout_keep_alive=30)
