"""Stages, retirement, the best version and any upload as a version, through the API, on real
git remotes: the history is git tags a person can read, every clone reads the same thing, and
names that could be misread are refused before anything is written."""

from __future__ import annotations

import math
import subprocess
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pytest
from data_helpers import data_manager, write_dataset
from helpers import (
    MODEL,
    TEAM,
    ModelRepo,
    git,
    md5_of,
    run_cpv,
    storage_object,
)

from cp_manage import (
    CPVError,
    DataCheckpointsManage,
    InvalidNameError,
    InvalidVersionError,
    ModelsCheckpointsManage,
    NothingToDoError,
    StorageError,
    VersionNotFoundError,
)
from cp_manage.backends.git import Git
from cp_manage.errors import AmbiguousCommitError, RetiredVersionError, StageNotFoundError
from cp_manage.manage.stages import (
    Proposal,
    StageLog,
    append_event,
    current_stages,
    retired,
    stage_events,
)
from cp_manage.spec import DATA, ArtifactSpec

MODEL_SPEC = ArtifactSpec.model()


def tagged(repo: ModelRepo, count: int, *, metrics: list[dict[str, object]] | None = None
           ) -> dict[str, str]:
    """Upload and tag ``count`` versions; returns version → md5."""
    made = {}
    for index in range(count):
        md5, _ = repo.upload((metrics or [{"step": index}] * count)[index], size=512,
                             seed=index)
        made[repo.manager.tag_model_checkpoint()] = md5
    return made


@pytest.fixture
def clones(tmp_path: Path, isolated_env: dict[str, Path]) -> tuple[ModelRepo, ModelRepo]:
    made = []
    for name in ("laptop-a", "laptop-b"):
        root = tmp_path / name / MODEL
        ModelsCheckpointsManage(team_name=TEAM, model_name=MODEL,
                                repo_path=root).import_model_init()
        made.append(ModelRepo(root, isolated_env["cpv_home"]))
    return made[0], made[1]


def test_promote_and_demote_are_tags_a_person_can_read(repo: ModelRepo) -> None:
    tagged(repo, 2)
    manager = repo.manager
    first = manager.promote("v0.1", "production", "passed the offline eval")
    assert first.created and first.event.tag == "stage/000001"
    second = manager.promote("v0.2", "production", "won the A/B test")
    assert second.event.replaced == "v0.1" and second.event.seq == 2
    again = manager.promote("v0.2", "production")
    assert not again.created and again.event.tag == "stage/000002"  # nothing recorded
    demoted = manager.demote("production", "rollback drill")
    assert demoted.event.replaced == "v0.2" and demoted.event.version is None
    assert not manager.demote("production").created
    assert manager.stages() == {}

    # On the remote, with git alone: one tag per event, in order, saying what happened.
    listing = git("for-each-ref", "--format=%(refname:strip=2) %(contents:subject)",
                  "refs/tags/stage/", cwd=repo.remote)
    assert listing.splitlines() == [
        "stage/000001 promote v0.1 to production",
        "stage/000002 promote v0.2 to production (replacing v0.1)",
        "stage/000003 demote production (was v0.2)"]
    shown = git("show", "--no-patch", "stage/000002", cwd=repo.remote)
    assert "won the A/B test" in shown and "Tagger: Test Engineer" in shown
    assert git("rev-parse", "stage/000002^{commit}", cwd=repo.remote) == git(
        "rev-parse", "v0.2^{commit}", cwd=repo.remote)  # it points at the version's commit
    history = manager.stage_history("production")
    assert [(e.seq, e.action, e.version, e.replaced) for e in history] == [
        (1, "promote", "v0.1", None), (2, "promote", "v0.2", "v0.1"), (3, "demote", None, "v0.2")]
    assert history[0].author == "Test Engineer <test@example.com>"
    assert history[0].created_at.endswith("Z") and history[0].message == "passed the offline eval"


def test_a_stage_works_wherever_a_version_does(repo: ModelRepo, tmp_path: Path) -> None:
    made = tagged(repo, 2, metrics=[{"wer": 0.3}, {"wer": 0.2}])
    manager = repo.manager
    manager.promote("v0.1", "production")
    manager.promote("v0.2", "staging")
    assert manager.get_model_metadata("production")["version"] == "v0.1"
    out = manager.download_model_checkpoint("production", output_dir=tmp_path / "prod")
    assert md5_of(out.model_path) == made["v0.1"] and out.tag == "v0.1"
    diff = manager.diff("production", "staging")
    assert diff == manager.diff("v0.1", "v0.2")
    assert diff["metrics"]["wer"]["delta"] == -0.1
    # A stage can be promoted from, too: staging's version goes to production.
    assert manager.promote("staging", "production").event.version == "v0.2"
    manager.revert_model_checkpoint("v0.1")
    assert manager.revert_model_checkpoint("production") is not None
    assert md5_of(repo.model_file) == made["v0.2"]
    with pytest.raises(StageNotFoundError, match="canary is not a stage") as raised:
        manager.metadata("canary")
    assert "production (v0.2), staging (v0.2)" in str(raised.value)


def test_the_data_has_stages_of_its_own(repo: ModelRepo, tmp_path: Path) -> None:
    tagged(repo, 1)
    data = data_manager(repo)
    data.import_data_init(write_dataset(tmp_path / "ds", {"train/a.txt": b"a\n"}))
    data.tag_data_checkpoint()
    event = data.promote("data/v0.1", "production").event
    assert event.tag == "data/stage/000001" and event.kind == "data"
    assert repo.manager.stages() == {}  # the model's sequence is another one
    assert data.stages() == {"production": "v0.1"}
    assert repo.manager.promote("v0.1", "production").event.tag == "stage/000001"
    reader = DataCheckpointsManage(team_name=TEAM, model_name=MODEL, repo_path=tmp_path / "no")
    assert reader.stages() == {"production": "v0.1"}  # no clone: from the git remote
    assert current_stages(repo.manager.repo, DATA) == {"production": "v0.1"}


def test_every_clone_sees_the_same_history(clones: tuple[ModelRepo, ModelRepo],
                                           tmp_path: Path) -> None:
    a, b = clones
    tagged(a, 2)
    a.manager.promote("v0.1", "production")
    b.manager.promote("v0.2", "production")  # b reads a's event first: it replaces v0.1
    assert b.manager.stage_history()[-1].replaced == "v0.1"
    assert a.manager.stages() == b.manager.stages() == {"production": "v0.2"}
    assert [e.to_dict() for e in a.manager.stage_history()] == [
        e.to_dict() for e in b.manager.stage_history()]
    # The read API, as gc reads it: from a clone, and from the catalog of the no-clone mirror.
    reader = ModelsCheckpointsManage(team_name=TEAM, model_name=MODEL, repo_path=tmp_path / "x")
    mirror = reader.version_source()
    assert stage_events(mirror, MODEL_SPEC, fetch=True) == stage_events(a.manager.repo,
                                                                        MODEL_SPEC)
    assert current_stages(mirror.catalog, MODEL_SPEC) == {"production": "v0.2"}


def test_a_killed_run_leaves_no_event(clones: tuple[ModelRepo, ModelRepo]) -> None:
    """A tag made here but never pushed is no event: the next read drops it, and the slot it
    seemed to hold is taken by what the remote has."""
    a, b = clones
    tagged(a, 2)
    a.manager.promote("v0.1", "production")
    b.git("fetch", "--tags", "origin")
    b.git("tag", "-a", "-m", "leftover", "stage/000002", "v0.2")
    a.manager.promote("v0.2", "staging")  # takes slot 2 on the remote
    assert b.manager.stages() == {"production": "v0.1", "staging": "v0.2"}
    assert "leftover" not in b.git("tag", "-n1", "-l", "stage/*")
    b.upload({"after": 1})  # its fetch of every tag works again


def test_retired_versions_are_hidden_and_cannot_be_promoted(repo: ModelRepo) -> None:
    tagged(repo, 3, metrics=[{"wer": 0.1}, {"wer": 0.3}, {"wer": 0.2}])
    manager = repo.manager
    manager.promote("v0.2", "production")
    with pytest.raises(CPVError, match=r"v0\.2 is in production, so it cannot be retired"):
        manager.retire("v0.2")
    event = manager.retire("v0.1", "trained on leaked test data").event
    assert event.tag == "stage/000002" and event.action == "retire"
    assert not manager.retire("v0.1").created
    assert manager.read_checkpoint_tag() == ["v0.2", "v0.3"]
    assert [i.version for i in manager.list_versions(include_retired=True)] == [
        "v0.1", "v0.2", "v0.3"]
    entries = manager.list_entries(all=True)
    assert [(e.info.version, e.retired is not None, e.stages) for e in entries] == [
        ("v0.1", True, []), ("v0.2", False, ["production"]), ("v0.3", False, [])]
    assert manager.best("wer", "min").version == "v0.3"  # v0.1 is lower, but retired
    with pytest.raises(RetiredVersionError, match=r"v0\.1 was retired .*leaked test data"):
        manager.promote("v0.1", "staging")
    assert git("tag", "-l", "v0.1", cwd=repo.remote) == "v0.1"  # its tag stays
    assert manager.get_model_metadata("v0.1")["version"] == "v0.1"
    assert list(retired(manager.repo, MODEL_SPEC)) == ["v0.1"]
    # Without a clone, no version means the latest one that is not retired.
    manager.retire("v0.3")
    reader = ModelsCheckpointsManage(team_name=TEAM, model_name=MODEL,
                                     repo_path=repo.root.parent / "no-clone")
    assert reader.metadata().version == "v0.2"


def test_best_by_a_metric(repo: ModelRepo) -> None:
    tagged(repo, 5, metrics=[{"wer": 0.3, "acc": 0.7}, {"acc": 0.9}, {"wer": math.nan},
                             {"wer": 0.2, "acc": 0.8}, {"wer": 0.2, "acc": "n/a"}])
    manager = repo.manager
    result = manager.best("wer", "min")
    assert result.version == "v0.5"  # equal to v0.4: the newer one
    assert result.skipped == {"v0.2": "no such metric", "v0.3": "not a finite number (nan)"}
    assert manager.best("wer", "max").version == "v0.1"
    assert manager.best("acc", "max").version == "v0.2"
    with pytest.raises(NothingToDoError, match="No model version has a value of 'bleu'"):
        manager.best("bleu", "max")
    with pytest.raises(CPVError, match="mode"):
        manager.best("wer", "lowest")  # type: ignore[arg-type]
    ordered = manager.list_entries(sort="wer")
    assert [e.info.version for e in ordered] == ["v0.4", "v0.5", "v0.1", "v0.2", "v0.3"]
    ordered = manager.list_entries(sort="acc", descending=True)
    assert [e.info.version for e in ordered] == ["v0.2", "v0.4", "v0.1", "v0.3", "v0.5"]


def test_any_upload_can_become_a_version(repo: ModelRepo, tmp_path: Path) -> None:
    uploads = [repo.upload({"epoch": n}, size=256, seed=n) for n in range(3)]
    manager = repo.manager
    listed = manager.list_entries(all=True)
    assert [(e.info.version, e.info.commit, e.info.metrics) for e in listed] == [
        (None, commit, {"epoch": n}) for n, (_, commit) in enumerate(uploads)]
    first_md5, first = uploads[0]
    short = first[:7]
    assert manager.get_model_metadata(short)["md5"] == first_md5
    out = manager.download_model_checkpoint(short, output_dir=tmp_path / "epoch0")
    assert md5_of(out.model_path) == first_md5
    with pytest.raises(NothingToDoError, match="tag VERSION --commit"):
        manager.promote(short, "production")

    assert manager.tag(commit=short).tag == "v0.1"
    assert manager.get_model_metadata("v0.1")["metrics"] == {"epoch": 0}
    assert git("rev-parse", "v0.1^{commit}", cwd=repo.remote) == first
    assert not manager.tag(commit=first).created  # idempotent: it already is v0.1
    assert manager.get_model_metadata(first[:10])["version"] == "v0.1"
    assert manager.tag_model_checkpoint() == "v0.2"  # HEAD, the next number
    assert [e.info.version for e in manager.list_entries(all=True)] == ["v0.1", "v0.2", None]

    # An upload whose objects storage no longer holds is refused, and nothing is pushed.
    storage_object(repo.storage, uploads[1][0]).unlink()
    before = repo.remote_refs()
    with pytest.raises(StorageError, match=f"commit {uploads[1][1][:10]}"):
        manager.tag(commit=uploads[1][1])
    assert repo.remote_refs() == before
    with pytest.raises(CPVError, match="No commit"):
        manager.tag(commit="0000000")
    with pytest.raises(CPVError, match="is not a commit"):
        manager.tag(commit="--all")


def test_a_short_hash_that_names_nothing_or_several(repo: ModelRepo) -> None:
    tagged(repo, 1)
    with pytest.raises(VersionNotFoundError):
        repo.manager.metadata("0000000")
    with pytest.raises(InvalidVersionError, match="stage name"):
        repo.manager.metadata("no such thing")
    # 1,500 commits on a side branch: some two share their first 4 hex digits (all but
    # certainly: the chance that none do is below 1e-7).
    stream = "".join(f"commit refs/heads/side\ncommitter T <t@e> {n} +0000\ndata 0\n\n"
                     for n in range(1500))
    subprocess.run(["git", "fast-import", "--quiet"], cwd=repo.root, input=stream.encode(),
                   check=True)
    prefixes = Counter(c[:4] for c in repo.git("rev-list", "refs/heads/side").split())
    shared = next(prefix for prefix, count in prefixes.items() if count > 1)
    with pytest.raises(AmbiguousCommitError, match=f"{shared} is the start of"):
        repo.manager.metadata(shared)


HOSTILE_STAGES = [
    "", "Production", "PRODUCTION", "prod uction", "production\n", " production",
    "production ", "-rf", "--force", "-", "v1", "v1.0", "v2-canary", "latest", "all", "head",
    "HEAD", "retired", "deadbeef", "cafe", "../etc", "stage/000001", "refs/tags/x", "a" * 33,
    "prod;rm -rf ~", "$(touch pwned)", "prod`id`", "pr\u043ed", "prod\x00", "1prod", "_prod",
    "prod_uction", "prod.uction", "production@{1}", "prod~1", "prod^", "prod:x", "prod*",
    "prod?", "prod[", "prod\\x", "\u200bprod", "prod\x1b[31m", "\uff50\uff52\uff4f\uff44",
]


def test_hostile_stage_names_are_refused(repo: ModelRepo) -> None:
    tagged(repo, 1)
    manager = repo.manager
    before = repo.remote_refs()
    for name in HOSTILE_STAGES:
        with pytest.raises(InvalidNameError, match="stage name") as raised:
            manager.promote("v0.1", name)
        assert raised.value.hint.startswith("A stage name is"), name
        with pytest.raises(InvalidNameError):
            manager.demote(name)
        with pytest.raises(InvalidNameError):
            manager.stage_history(name)
    assert repo.remote_refs() == before
    assert repo.git("tag", "-l", "stage/*") == ""
    assert not (repo.root / "pwned").exists()


def test_names_that_are_fine(repo: ModelRepo) -> None:
    tagged(repo, 1)
    names = ["production", "staging", "canary-eu", "p", "abc", "z" * 32, "v-next", "eu-west-1"]
    for name in names:
        assert repo.manager.promote("v0.1", name).created
    assert repo.manager.stages() == dict.fromkeys(sorted(names), "v0.1")
    assert repo.manager.metadata("abc").version == "v0.1"  # a stage, not a short hash


def test_a_hostile_message_is_kept_as_text(repo: ModelRepo) -> None:
    tagged(repo, 2)
    fake = 'cpv-event: {"action": "retire", "version": "v0.2", "kind": "model"}'
    event = repo.manager.promote("v0.1", "production",
                                 f"\x1b[31mred\x1b[0m\x00 and\n{fake}").event
    assert "\x1b" not in event.message and "\x00" not in event.message
    read = repo.manager.stage_history()
    assert [(e.action, e.version) for e in read] == [("promote", "v0.1")]
    assert read[0].message.endswith(fake)
    assert repo.manager.retired_versions() == {}


def test_stages_at_a_moment(tmp_path: Path) -> None:
    """Events written by hand with plain git (as another tool might) are read like cpv's, and
    ``at`` takes a prefix of the sequence, even when the clocks that made them disagree."""
    root = tmp_path / "plain"
    root.mkdir()
    git("init", "-q", cwd=root)
    git("commit", "-q", "--allow-empty", "-m", "x", cwd=root)

    def event(seq: int, when: str, action: str, stage: str, version: str | None) -> None:
        body = (f'{{"action": "{action}", "stage": "{stage}", "version": '
                f'{"null" if version is None else chr(34) + version + chr(34)}, '
                f'"created_at": "{when}", "kind": "model", "author": "A <a@b>"}}')
        git("tag", "-a", "-m", f"by hand\n\ncpv-event: {body}", f"stage/{seq:06d}", cwd=root)

    event(1, "2025-03-01T10:00:00Z", "promote", "production", "v1.0")
    event(2, "2025-03-04T09:00:00Z", "promote", "production", "v1.1")
    event(3, "2025-03-03T12:00:00Z", "promote", "staging", "v1.2")  # a clock behind
    event(4, "2025-03-05T09:00:00Z", "demote", "production", None)
    git("tag", "stage/000005", cwd=root)  # lightweight: no event, but its slot is taken
    git("tag", "-a", "-m", "not cpv's", "stage/000006", cwd=root)
    forged = '{"action": "promote", "stage": "../x", "version": "v1.0", "kind": "model"}'
    git("tag", "-a", "-m", f"forged\n\ncpv-event: {forged}", "stage/000007", cwd=root)
    log = StageLog(Git(root), MODEL_SPEC)
    assert log.last_seq == 7
    assert set(log.skipped) == {"stage/000005", "stage/000006", "stage/000007"}
    assert "stage name" in log.skipped["stage/000007"]

    def at(text: str) -> dict[str, str | None]:
        moment = datetime.fromisoformat(text).replace(tzinfo=timezone.utc)
        return {s: e.version for s, e in log.at(moment).items()}

    assert at("2025-02-28T00:00:00") == {}
    # Event 3's clock says 3 March, but it came after event 2 (4 March): it counts from then.
    assert at("2025-03-03T13:00:00") == {"production": "v1.0"}
    assert at("2025-03-04T10:00:00") == {"production": "v1.1", "staging": "v1.2"}
    assert at("2025-03-06T00:00:00") == {"staging": "v1.2"}


def test_stages_cli_at_a_date(repo: ModelRepo) -> None:
    tagged(repo, 1)
    repo.manager.promote("v0.1", "production")
    assert run_cpv("model", "stages", "--at", "2000-01-01", cwd=repo.root).stdout.startswith(
        "No stage held")
    today = datetime.now(timezone.utc).date().isoformat()
    assert "v0.1" in run_cpv("model", "stages", "--at", today, cwd=repo.root).stdout
    assert repo.manager.stages(at="2000-01-01") == {}
    with pytest.raises(CPVError, match="is not a date"):
        repo.manager.stages(at="last tuesday")


def test_a_retired_version_stays_retired_in_another_clone(
        clones: tuple[ModelRepo, ModelRepo]) -> None:
    """Clone B made v0.1 and v0.2 and still has them cached; clone A retires v0.1, and its
    object is reclaimed from storage (as gc would). B's doctor --repair mends what v0.2 lost
    but never brings v0.1 back, even once B's HEAD holds v0.1 again."""
    a, b = clones
    made = tagged(b, 2)
    a.manager.retire("v0.1", "leaked test data")
    for version in ("v0.1", "v0.2"):
        storage_object(b.storage, made[version]).unlink()
    assert (b.cache / "files" / "md5" / made["v0.1"][:2] / made["v0.1"][2:]).is_file()

    repaired = run_cpv("doctor", "--repair", cwd=b.root).stdout
    assert "retired, so not checked: v0.1" in repaired
    assert storage_object(b.storage, made["v0.2"]).is_file()
    assert not storage_object(b.storage, made["v0.1"]).exists()

    b.manager.revert_model_checkpoint("v0.1", force=True)  # from B's cache
    storage_object(b.storage, made["v0.1"]).unlink(missing_ok=True)
    checked = run_cpv("doctor", "--repair", cwd=b.root).stdout
    assert "HEAD's model (a retired version)" in checked
    assert not storage_object(b.storage, made["v0.1"]).exists()
    assert run_cpv("doctor", cwd=b.root).returncode == 0


def test_a_lost_race_is_read_again(clones: tuple[ModelRepo, ModelRepo]) -> None:
    """B decides to promote v0.1; before its tag lands, A retires v0.1 and takes the slot. B's
    push is refused, B reads the log again, and its decision now sees the retirement."""
    a, b = clones
    tagged(b, 1)
    seen: list[tuple[int, list[str]]] = []

    def decide(log: StageLog) -> Proposal:
        seen.append((log.last_seq, sorted(log.retired())))
        if len(seen) == 1:
            a.manager.retire("v0.1", "meanwhile")  # A wins the slot B is about to take
        if log.retired():
            raise RetiredVersionError("v0.1 was retired")
        return Proposal("promote", "production", "v0.1", None, b.git("rev-parse", "v0.1"), "")

    with pytest.raises(RetiredVersionError):
        append_event(b.manager.repo, MODEL_SPEC, decide)
    assert seen == [(0, []), (1, ["v0.1"])]
    assert b.git("ls-remote", "--refs", "origin", "refs/tags/stage/*").count("stage/") == 1
    assert b.git("tag", "-l", "stage/*") == "stage/000001"
