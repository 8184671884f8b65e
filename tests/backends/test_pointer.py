"""cp_manage.backends.pointer: strict parsing, and writing byte for byte what ``dvc add`` does."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import dvc, git, write_random
from hypothesis import given, settings
from hypothesis import strategies as st

from cp_manage.backends.pointer import Pointer, parse_pointer
from cp_manage.errors import PointerError


@pytest.fixture(scope="module")
def dvc_added(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository where the stock ``dvc add`` tracked a file and a folder."""
    root = tmp_path_factory.mktemp("dvc-add")
    git("init", "-q", cwd=root)
    dvc("init", "-q", cwd=root)
    write_random(root / "model.bin", 3000, seed=1)
    write_random(root / "data" / "train" / "a.bin", 100, seed=2)
    write_random(root / "data" / "b.bin", 50, seed=3)
    dvc("add", "-q", "model.bin", cwd=root)
    dvc("add", "-q", "data", cwd=root)
    return root


@pytest.mark.parametrize("name", ["model.bin", "data"])
def test_round_trip_matches_dvc_add(dvc_added: Path, name: str) -> None:
    text = (dvc_added / f"{name}.dvc").read_text(encoding="utf-8")
    pointer = parse_pointer(text, source=f"{name}.dvc", expected_path=name)
    assert pointer.path == name
    assert pointer.dumps() == text


def test_file_pointer_fields(dvc_added: Path) -> None:
    from helpers import md5_of

    pointer = parse_pointer((dvc_added / "model.bin.dvc").read_bytes(), source="model.bin.dvc")
    assert pointer.md5 == md5_of(dvc_added / "model.bin")
    assert pointer.size == 3000
    assert not pointer.is_dir and pointer.nfiles is None
    assert pointer.oid == pointer.md5
    assert (dvc_added / ".dvc" / "cache" / "files" / "md5" / pointer.md5[:2]
            / pointer.md5[2:]).is_file()


def test_dir_pointer_fields(dvc_added: Path) -> None:
    pointer = parse_pointer((dvc_added / "data.dvc").read_bytes(), source="data.dvc")
    assert pointer.is_dir and pointer.nfiles == 2 and pointer.size == 150
    assert pointer.oid == f"{pointer.md5}.dir"


@settings(max_examples=60, deadline=None)
@given(path=st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9 ._#'\"-]{0,30}", fullmatch=True),
       md5=st.from_regex(r"[0-9a-f]{32}", fullmatch=True) | st.text("0123456789e", min_size=32,
                                                                       max_size=32),
       size=st.integers(min_value=0, max_value=2**50),
       nfiles=st.none() | st.integers(min_value=0, max_value=10**6))
def test_dumps_then_parse_is_identity(path: str, md5: str, size: int, nfiles: int | None) -> None:
    pointer = Pointer(path=path, md5=md5, size=size, nfiles=nfiles)
    assert parse_pointer(pointer.dumps(), source="x.dvc") == pointer


def _pointer(md5: object = "a" * 32, size: object = 1, path: object = "model.bin",
             extra: str = "") -> str:
    return f"outs:\n- md5: {md5}\n  size: {size}\n  hash: md5\n  path: {path}\n{extra}"


@pytest.mark.parametrize(("text", "fragment"), [
    ("{{{ not: yaml: [", "not valid YAML"),
    ("\x00\x01garbage", "not valid YAML"),
    ("", "one output"),
    ("just a string", "one output"),
    ("outs: []", "one output"),
    ("outs:\n- md5: 1\n- md5: 2\n", "one output"),
    ("outs: {md5: x}", "one output"),
    (_pointer(md5="../../etc/passwd"), "malformed md5"),
    (_pointer(md5="ABCDEF" + "0" * 26), "malformed md5"),
    (_pointer(md5="a" * 31), "malformed md5"),
    ("outs:\n- size: 1\n  path: model.bin\n", "no md5"),
    (_pointer(size=-1), "invalid size"),
    (_pointer(size="many"), "invalid size"),
    (_pointer(size="true"), "invalid size"),
    (_pointer(md5="a" * 32 + ".dir"), "invalid nfiles"),
    (_pointer(path="../../etc/passwd"), "outside the repository"),
    (_pointer(path="/etc/passwd"), "outside the repository"),
    (_pointer(path="sub/../../x"), "outside the repository"),
    (_pointer(path="C:/Windows"), "outside the repository"),
    (_pointer(path="''"), "empty"),
    (_pointer(path="[a, b]"), "not text"),
    (_pointer(path="other.bin"), "instead of"),
])
def test_corrupt_or_hostile_pointer_is_refused(text: str, fragment: str) -> None:
    with pytest.raises(PointerError) as caught:
        parse_pointer(text, source="model.bin.dvc", expected_path="model.bin")
    assert fragment in str(caught.value)
    assert caught.value.hint  # says how to restore it


# md5s that YAML could take for a number (all digits, or digits with one "e") are the edge.
MD5S = (st.from_regex(r"[0-9a-f]{32}", fullmatch=True)
        | st.text("0123456789", min_size=32, max_size=32)
        | st.integers(1, 30).flatmap(lambda at: st.text("0123456789", min_size=31, max_size=31)
                                     .map(lambda digits: f"{digits[:at]}e{digits[at:]}")))


@settings(max_examples=60, deadline=None)
@given(path=st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9 ._-]{0,30}", fullmatch=True), md5=MD5S,
       size=st.integers(min_value=0, max_value=2**50),
       nfiles=st.none() | st.integers(min_value=0, max_value=10**6))
def test_dumps_matches_dvc_serializer(path: str, md5: str, size: int, nfiles: int | None) -> None:
    """Byte for byte what DVC's own YAML writer produces for the same output."""
    from dvc.utils.serialize import dumps_yaml

    pointer = Pointer(path=path, md5=md5, size=size, nfiles=nfiles)
    out: dict[str, object] = {"md5": pointer.oid, "size": size}
    if nfiles is not None:
        out["nfiles"] = nfiles
    out.update(hash="md5", path=path)
    assert pointer.dumps() == dumps_yaml({"outs": [out]})


@pytest.mark.parametrize("path", ["NO", "yes", "On", "off", "y", "1_000", "0755", "null"])
def test_words_yaml_1_1_reads_as_other_types_stay_paths(path: str) -> None:
    """DVC writes YAML 1.2, where ``NO`` is a string; a YAML 1.1 reader would see False."""
    from dvc.utils.serialize import dumps_yaml

    pointer = Pointer(path=path, md5="0" * 32, size=1)
    assert pointer.dumps() == dumps_yaml({"outs": [{"md5": "0" * 32, "size": 1, "hash": "md5",
                                                     "path": path}]})
    assert parse_pointer(pointer.dumps(), source="x.dvc") == pointer
