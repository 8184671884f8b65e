"""What an artifact is: its kind, where it lives in the repository, file or tree, tag names.

A repository versions two artifacts: the model (one file such as ``model.bin`` or
``model.safetensors``, or one folder such as ``checkpoint/``, chosen at ``cpv init --artifact``)
and the data (the ``data/`` folder). Everything that differs between them is a value of
``ArtifactSpec``, so the code that hashes, stores, tags and restores them is one code path.
Pure logic, no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cp_manage.errors import InvalidNameError
from cp_manage.versions import DATA_PREFIX, Kind, Version, parse_version, version_from_tag

DEFAULT_ARTIFACT = "model.bin"
"""The seed's model artifact, and that of every repository made before ``--artifact``."""

DATA_PATH = "data"

# Names the repository itself uses (or DVC and git do): the artifact may not take them.
_RESERVED = {DATA_PATH, ".dvc", ".git", ".cpv.json", ".gitignore", ".dvcignore", "metrics.log",
             "readme.md", "train.py"}
# One path segment; letters, digits and the punctuation checkpoint names use
# (``epoch=3-step=100.ckpt``), nothing a .gitignore line or a shell would read specially.
_ARTIFACT_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._=+@-]{0,99}")


@dataclass(frozen=True)
class ArtifactSpec:
    """One versioned artifact of a repository.

    Attributes:
        kind: ``"model"`` or ``"data"``: the CLI group, the metadata's ``kind``.
        path: where it lives, relative to the repository's root (``model.bin``, ``checkpoint``,
            ``data``); never with a trailing ``/``.
        tree: a folder (stored as DVC stores a directory) rather than a single file.
        tag_prefix: what its version tags start with (``""`` → ``v1.0``, ``"data/"`` →
            ``data/v1.0``).
    """

    kind: Kind
    path: str
    tree: bool
    tag_prefix: str

    @classmethod
    def model(cls, name: str | None = None) -> ArtifactSpec:
        """The model artifact named ``name`` (default ``model.bin``); a trailing ``/`` makes it
        a folder.

        Raises:
            InvalidNameError: the name is not one plain path segment, or is one the repository
                uses itself (``data``, ``.dvc``, ``metrics.log``, ...).
        """
        name = DEFAULT_ARTIFACT if name is None else name
        return cls("model", validate_artifact_name(name), name.endswith("/"), "")

    @property
    def name(self) -> str:
        """How the user names it: ``model.bin``, ``checkpoint/``."""
        return f"{self.path}/" if self.tree else self.path

    @property
    def pointer_file(self) -> str:
        """The DVC pointer committed for it (``model.bin.dvc``, ``data.dvc``)."""
        return f"{self.path}.dvc"

    @property
    def records_metrics(self) -> bool:
        """Whether each upload adds a ``metrics.log`` line (models do, datasets do not)."""
        return self.kind == "model"

    @property
    def chosen_at_init(self) -> bool:
        """Whether the repository chose this artifact (``--artifact``): the model, not data."""
        return self.kind == "model"

    @property
    def tag_pattern(self) -> str:
        """A ``git tag --list`` pattern covering its version tags (and maybe others)."""
        return f"{self.tag_prefix}v*"

    def tag(self, version: Version) -> str:
        """The git tag of ``version``: ``v1.0`` or ``data/v1.0``."""
        return f"{self.tag_prefix}{version}"

    def version_of(self, tag: str) -> Version | None:
        """The version a tag stands for, or None when it is not one of this artifact's tags."""
        return version_from_tag(tag, self.kind)

    def parse(self, text: object) -> Version:
        """Parse a version given by the user (``v1.0``; for data also ``data/v1.0``).

        Raises:
            InvalidVersionError.
        """
        return parse_version(text, kind=self.kind)


def wrong_kind_message(spec: ArtifactSpec, source: object) -> tuple[str, str]:
    """The message and hint for a source that is a folder where ``spec`` is a file, or the other
    way round."""
    if not spec.chosen_at_init:
        return (f"{source} is not a folder", "A dataset is a folder; put the file in one.")
    if spec.tree:
        return (f"{source} is a file, but this repository's model is the folder {spec.name} "
                "(chosen with --artifact at init)",
                "Upload a folder (such as a save_pretrained folder); single-file checkpoints "
                "need a repository made with 'cpv init --artifact NAME' (no trailing '/').")
    return (f"{source} is a folder, but this repository's model is the file {spec.name} "
            "(chosen with --artifact at init)",
            "Upload a single file; folder checkpoints need a repository made with "
            "'cpv init --artifact NAME/' (a name ending in '/').")


DATA = ArtifactSpec("data", DATA_PATH, True, DATA_PREFIX)
"""The training data: the ``data/`` folder, versions ``data/vX.Y``."""


def validate_artifact_name(name: object) -> str:
    """Check ``--artifact NAME`` and return its path (without the trailing ``/``).

    Raises:
        InvalidNameError: with what would work instead.
    """
    hint = ("Use one plain name such as model.bin, model.safetensors, best.ckpt, or checkpoint/ "
            "(ending in '/') for a folder: letters, digits and '._=+@-', no '/' inside, not "
            "starting with '.', not data, metrics.log, train.py, README.md or a .dvc name.")
    if not isinstance(name, str) or not name.strip("/"):
        raise InvalidNameError("The artifact name is empty", hint=hint)
    path = name[:-1] if name.endswith("/") else name
    if not _ARTIFACT_RE.fullmatch(path) or ".." in path:
        raise InvalidNameError(f"Invalid artifact name {name!r}", hint=hint)
    if path.casefold() in _RESERVED or path.casefold().endswith(".dvc"):
        raise InvalidNameError(f"The artifact name {name!r} is taken by the repository itself",
                               hint=hint)
    return path
