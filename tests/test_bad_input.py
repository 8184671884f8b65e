"""Bad input, through the API and the CLI: each is refused with a clear ``CPVError`` subclass
(CLI: exit 1 and one readable line) and leaves the repository, both remotes and the user's files
exactly as they were."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    MODEL,
    TEAM,
    ModelRepo,
    assert_one_error_line,
    files_under,
    init_repo,
    isolate_environment,
    run_cpv,
)

from cp_manage import (
    ArtifactNotFoundError,
    CPVError,
    InvalidNameError,
    InvalidVersionError,
    ModelsCheckpointsManage,
    NotARepositoryError,
    PointerError,
    UnsavedChangesError,
    VersionExistsError,
    VersionNotFoundError,
)


@dataclass(frozen=True)
class Place:
    repo: ModelRepo
    outside: Path  # an empty folder in no repository

    def snapshot(self) -> dict[str, Any]:
        cpv_home = Path(os.environ["CPV_HOME"])
        return {**self.repo.snapshot(), "outside": sorted(os.listdir(self.outside)),
                "cpv_home": files_under(cpv_home) if cpv_home != self.repo.cpv_home else None}


@dataclass(frozen=True)
class Case:
    id: str
    error: type[CPVError]
    api: Callable[[Place], object]
    cli: tuple[str, ...] | None  # the same through the CLI, run in the repository
    outside: bool = False  # run the CLI in the folder outside any repository instead


def _manager(place: Place) -> ModelsCheckpointsManage:
    return place.repo.manager


def _elsewhere(place: Place) -> ModelsCheckpointsManage:
    return ModelsCheckpointsManage(repo_path=place.outside)


MALFORMED = ["1.0", "v1", "v1.0 ", "--upload-pack=x"]
BAD_NAMES = ["", "a/b", "..", "../etc", "a b", "a..b", "/abs"]
CLI_BAD_NAMES = {("team_name", ""), ("team_name", "a/b"), ("team_name", "a b"),
                 ("model_name", ".."), ("model_name", "../etc"), ("model_name", "/abs")}

CASES: list[Case] = [
    Case("missing-model-file", ArtifactNotFoundError,
         lambda p: _manager(p).upload_model_checkpoint(p.repo.model_file, {"a": 1}),
         ("model", "upload", "--metric", "a=1")),
    # A file outside the repository and a non-finite metric are accepted since issues 11 and 12
    # (tests/manage/test_artifacts.py, tests/test_metrics_values.py): no longer bad input.
    Case("metrics-not-json", CPVError,
         lambda p: _manager(p).upload_model_checkpoint(metrics={"loss": object()}),
         ("model", "upload", "--metrics-file", "/etc/hostname")),
    Case("show-unknown", VersionNotFoundError, lambda p: _manager(p).get_model_metadata("v9.9"),
         ("model", "show", "v9.9")),
    Case("download-unknown", VersionNotFoundError,
         lambda p: _manager(p).download_model_checkpoint("v9.9", output_dir=p.outside / "o"),
         ("model", "download", "v9.9")),
    Case("revert-unknown", VersionNotFoundError,
         lambda p: _manager(p).revert_model_checkpoint("v9.9"), ("model", "revert", "v9.9")),
    Case("diff-unknown", VersionNotFoundError, lambda p: _manager(p).diff("v0.1", "v7.0"),
         ("model", "diff", "v0.1", "v7.0")),
    Case("tag-existing", VersionExistsError, lambda p: _manager(p).tag_model_checkpoint("v0.1"),
         ("model", "tag", "v0.1")),
    Case("download-onto-working-tree", CPVError,
         lambda p: _manager(p).download_model_checkpoint("v0.1", output_dir=p.repo.root),
         ("model", "download", "v0.1", "-o", ".")),
    Case("download-into-a-file", CPVError,
         lambda p: _manager(p).download_model_checkpoint("v0.1",
                                                         output_dir=p.repo.root / "README.md"),
         None),  # the CLI refuses '-o FILE' as a usage error (exit 2)
    *[Case(f"{verb}-malformed-{text!r}", InvalidVersionError, api,
           ("model", verb, "--", text) if verb in ("tag", "download") or text == MALFORMED[-1]
           else None)
      for text in MALFORMED
      for verb, api in [
          ("tag", lambda p, t=text: _manager(p).tag_model_checkpoint(t)),
          ("download", lambda p, t=text: _manager(p).download_model_checkpoint(
              t, output_dir=p.outside / "o")),
          ("show", lambda p, t=text: _manager(p).get_model_metadata(t)),
          ("revert", lambda p, t=text: _manager(p).revert_model_checkpoint(t)),
      ]],
    *[Case(f"init-bad-{what}-{name!r}", InvalidNameError,
           lambda p, kw={what: name}: ModelsCheckpointsManage(  # type: ignore[misc]
               **{"team_name": TEAM, "model_name": MODEL, **kw},
               repo_path=p.outside / "new").import_model_init(),
           ("init", "--team", name if what == "team_name" else TEAM,
            "--model", name if what == "model_name" else MODEL, "--path", "new")
           if (what, name) in CLI_BAD_NAMES else None,
           outside=True)
      for name in BAD_NAMES for what in ("team_name", "model_name")],
    Case("download-without-clone-bad-team", InvalidNameError,
         lambda p: ModelsCheckpointsManage(team_name="../x", model_name=MODEL,
                                           repo_path=p.outside / "n").download_checkpoint(),
         ("model", "download", "--team", "../x", "--model", MODEL), outside=True),
    *[Case(f"outside-{verb}", NotARepositoryError, api, ("model", *args), outside=True)
      for verb, api, args in [
          ("upload", lambda p: _elsewhere(p).upload_model_checkpoint(), ("upload",)),
          ("tag", lambda p: _elsewhere(p).tag_model_checkpoint(), ("tag",)),
          ("list", lambda p: _elsewhere(p).read_checkpoint_tag(), ("list",)),
          ("show", lambda p: _elsewhere(p).get_model_metadata(), ("show",)),
          ("download", lambda p: _elsewhere(p).download_model_checkpoint(
              "v0.1", output_dir=p.outside / "o"), ("download", "v0.1", "-o", "o")),
          ("revert", lambda p: _elsewhere(p).revert_model_checkpoint("v0.1"),
           ("revert", "v0.1")),
          ("diff", lambda p: _elsewhere(p).diff("v0.1", "v0.2"), ("diff", "v0.1", "v0.2")),
      ]],
]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Place]:
    """v0.1 and v0.2 tagged, one more upload untagged, and then model.bin deleted."""
    root = tmp_path_factory.mktemp("bad-input")
    with pytest.MonkeyPatch.context() as mp:
        env = isolate_environment(mp, root / "env")
        repo = init_repo(root / MODEL, env["cpv_home"])
        for seed in (1, 2):
            repo.upload({"accuracy": seed / 10}, seed=seed)
            repo.manager.tag_model_checkpoint()
        repo.upload({"accuracy": 0.3}, seed=3)
        repo.model_file.unlink()
        (root / "outside").mkdir()
        yield Place(repo, root / "outside")


@pytest.fixture
def place(shared: Place, tmp_path: Path) -> Place:
    """The shared repository, with this test's own empty outside folder."""
    outside = tmp_path / "outside"
    outside.mkdir()
    return Place(shared.repo, outside)


def _check_api(place: Place, error: type[CPVError], call: Callable[[Place], object]) -> None:
    before = place.snapshot()
    with pytest.raises(error) as caught:
        call(place)
    assert isinstance(caught.value, CPVError)
    assert str(caught.value).strip() and "\n" not in str(caught.value)
    assert place.snapshot() == before


def _check_cli(place: Place, args: tuple[str, ...], *, outside: bool) -> None:
    before = place.snapshot()
    result = run_cpv(*args, cwd=place.outside if outside else place.repo.root, expect=None)
    assert_one_error_line(result)
    assert place.snapshot() == before


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_api_refuses(place: Place, case: Case) -> None:
    _check_api(place, case.error, case.api)


CLI_CASES = [c for c in CASES if c.cli is not None]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_cli_refuses(place: Place, case: Case) -> None:
    assert case.cli is not None
    _check_cli(place, case.cli, outside=case.outside)


# -- cases that need a repository in a particular state ----------------------------------------


CORRUPT_POINTERS = {
    "garbage-yaml": "{{{ outs: [ not yaml\n",
    "escaping-path": ("outs:\n- md5: 0123456789abcdef0123456789abcdef\n  size: 10\n"
                      "  hash: md5\n  path: ../../etc/passwd\n"),
    "absolute-path": ("outs:\n- md5: 0123456789abcdef0123456789abcdef\n  size: 10\n"
                      "  hash: md5\n  path: /etc/passwd\n"),
}


@pytest.fixture(scope="module", params=sorted(CORRUPT_POINTERS))
def corrupt_repo(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[ModelRepo]:
    """A version v0.1, then a hand-made commit (and version v0.2) with a corrupt pointer."""
    root = tmp_path_factory.mktemp(f"corrupt-{request.param}")
    with pytest.MonkeyPatch.context() as mp:
        env = isolate_environment(mp, root / "env")
        repo = init_repo(root / MODEL, env["cpv_home"])
        repo.upload({"accuracy": 0.1})
        repo.manager.tag_model_checkpoint()
        (repo.root / "model.bin.dvc").write_text(CORRUPT_POINTERS[request.param])
        repo.git("commit", "-q", "-m", "hand edit", "--", "model.bin.dvc")
        repo.git("tag", "-a", "-m", "hand-made", "v0.2")
        yield repo


@pytest.fixture
def corrupt(corrupt_repo: ModelRepo, workdir: Path) -> Place:
    return Place(corrupt_repo, workdir)


CORRUPT_CASES: list[tuple[str, Callable[[Place], object], tuple[str, ...]]] = [
    ("show-head", lambda p: _manager(p).get_model_metadata(), ("model", "show")),
    ("show-tag", lambda p: _manager(p).get_model_metadata("v0.2"), ("model", "show", "v0.2")),
    ("download-head", lambda p: _manager(p).download_model_checkpoint(
        output_dir=p.outside / "o"), ("model", "download", "-o", "o")),
    ("download-tag", lambda p: _manager(p).download_model_checkpoint(
        "v0.2", output_dir=p.outside / "o"), ("model", "download", "v0.2", "-o", "o")),
    ("tag", lambda p: _manager(p).tag_model_checkpoint(), ("model", "tag")),
    ("revert", lambda p: _manager(p).revert_model_checkpoint("v0.1"), ("model", "revert", "v0.1")),
    ("revert-to-it", lambda p: _manager(p).revert_model_checkpoint("v0.2", force=True),
     ("model", "revert", "v0.2", "--force")),
]


@pytest.mark.parametrize(("name", "api", "cli"), CORRUPT_CASES, ids=[c[0] for c in CORRUPT_CASES])
def test_corrupt_pointer_is_refused(corrupt: Place, name: str, api: Callable[[Place], object],
                                    cli: tuple[str, ...]) -> None:
    _check_api(corrupt, PointerError, api)
    _check_cli(corrupt, cli, outside=False)


def test_revert_with_unsaved_changes_is_refused(repo: ModelRepo, workdir: Path) -> None:
    repo.upload({"accuracy": 0.1}, seed=1)
    repo.manager.tag_model_checkpoint()
    repo.upload({"accuracy": 0.2}, seed=2)
    repo.write_model(seed=3)  # new weights, never uploaded
    place = Place(repo, workdir)
    _check_api(place, UnsavedChangesError, lambda p: _manager(p).revert_model_checkpoint("v0.1"))
    _check_cli(place, ("model", "revert", "v0.1"), outside=False)


def test_bad_names_to_the_manager_itself() -> None:
    for name in BAD_NAMES:
        with pytest.raises(InvalidNameError):
            ModelsCheckpointsManage(team_name=name, model_name=MODEL)
        with pytest.raises(InvalidNameError):
            ModelsCheckpointsManage(team_name=TEAM, model_name=name)
