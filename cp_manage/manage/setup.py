"""Setup: creating a cpv repository, cloning a teammate's, or adopting a hand-made one.

A cpv repository is git + DVC with a few files of its own (the skeleton): ``.cpv.json`` naming
the team, model and artifact, a README and training script, the ``.gitignore`` that keeps
artifacts and cpv's temporary files out of git, and ``.dvc/config`` naming the storage remote.
Everything here is idempotent: running it again finishes what a failed run left.
"""

from __future__ import annotations

import configparser
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cp_manage.backends.git import Git, check_identity, run_git
from cp_manage.backends.storage import open_storage
from cp_manage.config import CPVConfig
from cp_manage.errors import ConfigError, GitError, RemoteError
from cp_manage.fsutil import atomic_write_bytes
from cp_manage.git_urls import parse_git_url
from cp_manage.manage.catalog import DATA_PATH, METRICS_FILE
from cp_manage.spec import ArtifactSpec
from cp_manage.versions import validate_name

if TYPE_CHECKING:  # the repository calls in here; it is passed in, never imported
    from cp_manage.manage.repository import Repository

REPO_FILE = ".cpv.json"
STORAGE_REMOTE = "storage"
SKELETON_PATHS = (REPO_FILE, "README.md", "train.py", ".gitignore", METRICS_FILE, ".dvcignore",
                  ".dvc/config", ".dvc/.gitignore")

IGNORE_COMMENT = "# cpv's temporary files"
TEMPORARY_PATTERNS = ("*.cpv-tmp", "*.cpv-tmpdir", "*.cpv-old", "*.cpv-discarded",
                      "*.cpv-partial", "*.cpv-state")
"""What cpv writes beside the files it replaces: half-written files and folders, an old
dataset being swapped out, work a forced revert set aside, partial transfers a rerun continues
(with their state). None of it belongs in git."""


@dataclass(frozen=True)
class InitResult:
    """What ``init`` did: ``created`` is False when the repository was already there."""

    path: Path
    created: bool
    cloned: bool
    git_url: str
    storage_url: str


def read_repo_file(root: Path) -> dict[str, Any]:
    """What ``.cpv.json`` at ``root`` records (empty when there is none).

    Raises:
        ConfigError: it is corrupt.
    """
    try:
        data = json.loads((root / REPO_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise ConfigError(f"{root / REPO_FILE} is corrupt ({e})",
                          hint=f"Restore it with 'git checkout -- {REPO_FILE}'.") from e
    return data if isinstance(data, dict) else {}


def init_repository(repo_type: type[Repository], root: Path, *, team: str, model: str,
                    config: CPVConfig, git_url: str | None = None,
                    storage_url: str | None = None, force: bool = False,
                    artifact: str | None = None) -> tuple[Repository, InitResult]:
    """``Repository.init`` (see there), making repositories of ``repo_type``."""
    validate_name(team, "team")
    validate_name(model, "model")
    if artifact is not None:
        ArtifactSpec.model(artifact)  # refuse a bad name before anything is created
    root = root.expanduser().absolute()
    git_url = config.git_url(team, model, git_url)
    storage_url = config.storage_url(team, model, storage_url)

    adopting = (root / ".git").exists()
    if adopting and (root / ".dvc").is_dir() and (root / REPO_FILE).exists():
        repo = repo_type.open(root, config=config, team=team, model=model)
        check_artifact(repo, artifact)
        if _published(repo):
            return repo, InitResult(root, False, False, repo.git.remote_url() or git_url,
                                    repo.storage_url())
    # Everything that can be refused without side effects is checked before anything
    # (folder, bare remote, storage) is made.
    check_identity(root if adopting else _nearest_folder(root))
    if not adopting and root.exists() and any(root.iterdir()) and not force:
        raise ConfigError(f"{root} exists and is not empty",
                          hint="Choose another --path, or pass force=True / --force to "
                          "initialise inside it.")
    if adopting:
        git_url = Git(root).remote_url() or git_url  # its own remote, if it has one
    remote = parse_git_url(git_url)
    local_remote = Path(remote.path).expanduser().absolute() if remote.kind == "local" else None
    if local_remote is not None and not remote.scheme:
        git_url = str(local_remote)  # git would read a relative path from inside root

    storage = open_storage(storage_url, config=config)
    storage.ensure_location()
    if local_remote is not None:
        _ensure_bare_remote(local_remote)

    if adopting:
        recorded = read_repo_file(root).get("artifact")
        repo = repo_type(root, config=config, team=team, model=model,
                         artifact=artifact or (recorded if isinstance(recorded, str) else None))
        adopt(repo, git_url, storage_url)
        return repo, InitResult(root, True, False, repo.git.remote_url() or git_url,
                                repo.storage_url())

    try:
        heads = run_git(["ls-remote", "--heads", git_url], cwd=None).stdout.strip()
    except RemoteError as e:
        raise RemoteError(f"Cannot read the git remote {git_url}", command=e.command,
                          stderr=e.stderr, hint=e.hint) from e
    if heads:
        # Someone made this model already: take the team's history instead of a new one.
        root.parent.mkdir(parents=True, exist_ok=True)
        run_git(["clone", "--quiet", "--", git_url, str(root)], cwd=root.parent)
        clone = Git(root)
        if clone.head() is None and clone.rev_parse("refs/remotes/origin/main"):
            # The host's HEAD names a branch that does not exist (a host whose default is
            # master, say), so nothing was checked out: take main, the branch cpv pushes.
            clone.run("checkout", "--quiet", "-B", "main", "--track", "origin/main")
        repo = repo_type.open(root, config=config, team=team, model=model)
        check_artifact(repo, artifact)
        return repo, InitResult(root, True, True, git_url, repo.storage_url())

    root.mkdir(parents=True, exist_ok=True)
    run_git(["init", "--quiet", "--initial-branch=main"], cwd=root)
    repo = repo_type(root, config=config, team=team, model=model, artifact=artifact)
    write_skeleton(repo, storage_url)
    repo.git.run("remote", "add", "origin", git_url)
    commit = repo.git.commit_paths(list(SKELETON_PATHS), f"Initialize {team}/{model}")
    try:
        repo.git.push(f"{commit}:refs/heads/main")
        repo.git.run("branch", "--quiet", "--set-upstream-to=origin/main", check=False)
    except RemoteError as e:
        e.hint = f"{e.hint} {root} is kept: 'cpv init' run again pushes it.".lstrip()
        raise
    return repo, InitResult(root, True, False, git_url, storage_url)


def check_artifact(repo: Repository, artifact: str | None) -> None:
    """An existing repository keeps the artifact it was made with.

    Raises:
        ConfigError: ``artifact`` names another one.
    """
    if artifact is not None and ArtifactSpec.model(artifact) != repo.model_spec:
        raise ConfigError(
            f"{repo.team}/{repo.model} versions the artifact {repo.model_spec.name!r}, "
            f"not {artifact!r}",
            hint=f"Drop --artifact (or pass --artifact {repo.model_spec.name}); a "
            "repository versions one artifact, chosen when it was made.")


def _published(repo: Repository) -> bool:
    """Whether HEAD has history and the git remote is known to hold its first commit."""
    roots = repo.git.run("rev-list", "--max-parents=0", "HEAD", check=False)
    first = roots.stdout.decode().split()[:1] if roots.returncode == 0 else []
    return bool(first) and bool(repo.git.out(
        "for-each-ref", "--count=1", f"--contains={first[0]}", "refs/remotes/origin"))


def _ensure_bare_remote(path: Path) -> None:
    if (path / "HEAD").exists():
        return
    path.mkdir(parents=True, exist_ok=True)
    run_git(["init", "--quiet", "--bare", "--initial-branch=main"], cwd=path)


def write_skeleton(repo: Repository, storage_url: str) -> None:
    """Write the skeleton's files that are missing (an existing one is kept as it is) and name
    the storage remote in ``.dvc/config``."""
    from cp_manage.manage import templates

    files = {
        REPO_FILE: repo_file_bytes(repo),
        "README.md": templates.readme(repo.team, repo.model, repo.model_spec).encode(),
        "train.py": templates.train_script(repo.team, repo.model, repo.model_spec).encode(),
        ".gitignore": ensure_ignored(f"/{repo.model_spec.path}\n/{DATA_PATH}\n".encode(),
                                     repo.model_spec.path, temporary=True),
        METRICS_FILE: b"",
        ".dvcignore": templates.DVCIGNORE.encode(),
        ".dvc/.gitignore": b"/config.local\n/tmp\n/cache\n",
    }
    for name, content in files.items():
        target = repo.root / name
        if not target.exists():
            atomic_write_bytes(target, content)
    write_dvc_config(repo, storage_url)


def repo_file_bytes(repo: Repository) -> bytes:
    """The ``.cpv.json`` of ``repo``."""
    recorded = {"team": repo.team, "model": repo.model, "format": 1,
                "artifact": repo.model_spec.name}
    return (json.dumps(recorded, indent=2) + "\n").encode()


def write_dvc_config(repo: Repository, storage_url: str) -> None:
    """Name the storage remote in ``.dvc/config``: what teammates share, never secrets."""
    parser = configparser.ConfigParser()
    path = repo.root / ".dvc" / "config"
    if path.exists():
        parser.read(path, encoding="utf-8")
    section = f"'remote \"{STORAGE_REMOTE}\"'"
    if not parser.has_section("core"):
        parser.add_section("core")
    parser.set("core", "remote", STORAGE_REMOTE)
    if not parser.has_section(section):
        parser.add_section(section)
    parser.set(section, "url", storage_url)
    settings = repo.config.get_config()
    if storage_url.startswith("s3://"):
        for key, option in (("endpoint_url", "endpointurl"), ("region", "region")):
            if settings.get(key):
                parser.set(section, option, settings[key])
    lines = []
    for name in parser.sections():
        lines.append(f"[{name}]")
        lines += [f"    {k} = {v}" for k, v in parser.items(name, raw=True)]
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())


def adopt(repo: Repository, git_url: str, storage_url: str) -> None:
    """Make a hand-made git (+ DVC) repository a cpv repository, keeping its history."""
    (repo.root / ".dvc").mkdir(exist_ok=True)
    write_skeleton(repo, repo.storage_url_or(storage_url))
    if repo.git.remote_url() is None:
        repo.git.run("remote", "add", "origin", git_url)
    paths = [p for p in SKELETON_PATHS if (repo.root / p).exists()]
    branch = repo.git.branch()
    if branch is None:
        raise GitError("The repository to adopt has no branch checked out",
                       hint="Check out a branch (git switch main), then run init again.")
    # No commit yet: an init that failed before its first commit, finished now.
    message = (f"Initialize {repo.team}/{repo.model}" if repo.git.head() is None
               else f"Adopt {repo.team}/{repo.model} into cpv")
    repo.commit_and_push(lambda _head: {p: (repo.root / p).read_bytes() for p in paths},
                         message, write=False)
    if repo.git.run("rev-parse", "--verify", "--quiet", "@{upstream}",
                    check=False).returncode != 0:
        repo.git.run("branch", "--quiet", f"--set-upstream-to=origin/{branch}", check=False)


def ensure_ignored(raw: bytes | None, path: str, *, temporary: bool = False) -> bytes:
    """``.gitignore`` with ``/path`` in it (DVC-tracked artifacts never enter git) and, with
    ``temporary``, the patterns of cpv's temporary files."""
    text = (raw or b"").decode("utf-8", "replace")
    lines = text.splitlines()
    missing = [f"/{path}"] if f"/{path}" not in lines else []
    if temporary and not set(TEMPORARY_PATTERNS) <= set(lines):
        missing += [IGNORE_COMMENT] if IGNORE_COMMENT not in lines else []
        missing += [p for p in TEMPORARY_PATTERNS if p not in lines]
    if not missing:
        return text.encode()
    if text and not text.endswith("\n"):
        text += "\n"
    return (text + "".join(f"{line}\n" for line in missing)).encode()


def _nearest_folder(path: Path) -> Path:
    """``path``, or its closest ancestor that exists as a folder."""
    while not path.is_dir() and path != path.parent:
        path = path.parent
    return path
