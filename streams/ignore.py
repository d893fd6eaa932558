"""Which paths of a watched folder are not documents: defaults plus a ``.ragstreamignore``.

The ignore file uses gitignore syntax and git's semantics, matched by ``pathspec``: globs, ``**``,
patterns anchored with a leading ``/``, directory-only patterns ending in ``/``, negation with
``!``, comments with ``#``. As in git, a file inside an ignored directory cannot be re-included.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pathspec import GitIgnoreSpec

log = logging.getLogger(__name__)

IGNORE_FILE = ".ragstreamignore"

#: Hidden files and folders (``.git``, ``.#lock`` files, ``.swp`` of vim), editor backups and temp
#: files (``#autosave#`` of emacs, ``4913`` that vim writes to probe a folder). Written first,
#: so a ``!pattern`` in the ignore file can take any of them back, except ``.git``.
DEFAULT_PATTERNS = (".*", "*.swp", "*.swx", "*~", r"\#*#", "4913", "*.tmp")

#: Never indexed, whatever the ignore file says.
_ALWAYS_IGNORED = frozenset({".git"})


class IgnoreRules:
    """Answers "is this path ignored?" for paths relative to the watched folder (POSIX form)."""

    def __init__(self, patterns: list[str] | None = None) -> None:
        self.patterns = list(patterns or [])
        self._spec = GitIgnoreSpec.from_lines([*DEFAULT_PATTERNS, *self.patterns])
        self._folders: dict[str, bool] = {}

    @classmethod
    def load(cls, root: Path) -> IgnoreRules:
        """The defaults plus ``root/.ragstreamignore`` if there is one."""
        path = root / IGNORE_FILE
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls()
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("%s not used, only the default ignore rules apply: %s", path, exc)
            return cls()
        rules = cls(text.splitlines())
        log.info("ignore rules from %s: %d pattern line(s)", path, len(rules.patterns))
        return rules

    def ignores(self, relative: str, is_dir: bool = False) -> bool:
        """Whether ``relative`` (e.g. ``guides/setup.md``) or a folder above it is ignored."""
        parts = relative.split("/")
        if _ALWAYS_IGNORED.intersection(parts):
            return True
        # git does not look inside an ignored folder, so nothing under it can be re-included.
        for depth in range(1, len(parts)):
            if self._folder_ignored("/".join(parts[:depth])):
                return True
        return self._folder_ignored(relative) if is_dir else self._spec.match_file(relative)

    def _folder_ignored(self, relative: str) -> bool:
        known = self._folders.get(relative)
        if known is None:
            # The trailing slash lets directory-only patterns ("build/") match.
            known = self._folders[relative] = self._spec.match_file(relative + "/")
        return known
