"""cp_manage.versions: parse, bump, order and name checks (pure logic, no I/O)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cp_manage.errors import CPVError, InvalidNameError, InvalidVersionError
from cp_manage.versions import (
    FIRST,
    Version,
    next_version,
    parse_version,
    sort_versions,
    validate_name,
    version_from_tag,
)

numbers = st.integers(min_value=0, max_value=999_999_999)
versions = st.builds(Version, numbers, numbers)


class TestParse:
    @pytest.mark.parametrize(("text", "expected"), [
        ("v0.1", Version(0, 1)),
        ("v1.0", Version(1, 0)),
        ("v0.10", Version(0, 10)),
        ("v12.345", Version(12, 345)),
    ])
    def test_valid(self, text: str, expected: Version) -> None:
        assert parse_version(text) == expected

    @pytest.mark.parametrize("text", [
        "1.0", "v1", "v1.0 ", " v1.0", "v1.0\n", "V1.0", "v1.0.0", "v01.0", "v1.01", "v-1.0",
        "v1.-0", "v1.0^{}", "v1.0~1", "--upload-pack=x", "-v1.0", "", "v", "v.", "v1.",
        "v1.0/x", "refs/tags/v1.0", "v1,0", "v\u0661.0", "v1.0\x00", "v1234567890.0",
    ])
    def test_malformed_is_refused(self, text: str) -> None:
        with pytest.raises(InvalidVersionError) as caught:
            parse_version(text)
        assert isinstance(caught.value, CPVError)
        assert "v1.0" in str(caught.value)  # the hint shows what a version looks like

    @pytest.mark.parametrize("value", [None, 1.0, 1, b"v1.0", ["v1.0"]])
    def test_non_string_is_refused(self, value: object) -> None:
        with pytest.raises(InvalidVersionError):
            parse_version(value)

    def test_data_versions_take_their_prefix(self) -> None:
        assert parse_version("data/v1.2", kind="data") == Version(1, 2)
        assert parse_version("v1.2", kind="data") == Version(1, 2)
        with pytest.raises(InvalidVersionError):
            parse_version("data/v1.2", kind="model")
        with pytest.raises(InvalidVersionError):
            parse_version("data/data/v1.2", kind="data")

    def test_version_from_tag(self) -> None:
        assert version_from_tag("v0.3", "model") == Version(0, 3)
        assert version_from_tag("data/v0.3", "model") is None
        assert version_from_tag("data/v0.3", "data") == Version(0, 3)
        assert version_from_tag("v0.3", "data") is None
        assert version_from_tag("release-1", "model") is None

    @given(versions)
    def test_round_trip(self, version: Version) -> None:
        assert parse_version(str(version)) == version
        assert parse_version(version.tag("data"), kind="data") == version
        assert version_from_tag(version.tag("model"), "model") == version
        assert version_from_tag(version.tag("data"), "data") == version

    @given(st.text(max_size=20))
    def test_anything_else_is_refused_or_canonical(self, text: str) -> None:
        try:
            version = parse_version(text)
        except InvalidVersionError:
            return
        assert str(version) == text  # only the canonical spelling is ever accepted


class TestOrderAndBump:
    def test_numeric_not_lexical(self) -> None:
        names = ["v0.10", "v0.9", "v1.0", "v0.2", "v10.0", "v2.0", "v0.11"]
        ordered = [str(v) for v in sort_versions(parse_version(n) for n in names)]
        assert ordered == ["v0.2", "v0.9", "v0.10", "v0.11", "v1.0", "v2.0", "v10.0"]

    def test_first_versions(self) -> None:
        assert next_version([]) == FIRST == Version(0, 1)
        assert next_version([], major=True) == Version(1, 0)

    def test_bumps_the_highest(self) -> None:
        existing = [Version(0, 9), Version(0, 10), Version(0, 2)]
        assert next_version(existing) == Version(0, 11)
        assert next_version(existing, major=True) == Version(1, 0)
        assert next_version([Version(1, 3), Version(0, 20)]) == Version(1, 4)
        assert next_version([Version(1, 3), Version(0, 20)], major=True) == Version(2, 0)

    @given(st.lists(versions, max_size=30), st.booleans())
    def test_next_is_new_and_greatest(self, existing: list[Version], major: bool) -> None:
        new = next_version(existing, major=major)
        assert new not in existing
        assert all(new > v for v in existing)
        if major:
            assert new.minor == 0
        elif existing:
            assert (new.major, new.minor) == (max(existing).major, max(existing).minor + 1)

    @given(st.lists(versions, max_size=30))
    def test_sort_matches_numbers(self, items: list[Version]) -> None:
        ordered = sort_versions(items)
        keys = [(v.major, v.minor) for v in ordered]
        assert keys == sorted(keys)
        assert sorted(map(str, ordered)) == sorted(map(str, items))


class TestNames:
    @pytest.mark.parametrize("name", ["AI-Convo", "faster-whisper", "bert.large", "yolo_v8",
                                      "x", "0team", "a" * 100])
    def test_valid(self, name: str) -> None:
        assert validate_name(name, "team") == name

    @pytest.mark.parametrize("name", ["", "a/b", "/abs", "..", "a..b", "../x", "a b", " a",
                                      "a ", "-rf", ".hidden", "a\\b", "a\nb", "ä", "a:b",
                                      "a" * 101, None, 3])
    def test_invalid(self, name: object) -> None:
        with pytest.raises(InvalidNameError) as caught:
            validate_name(name, "model")
        assert caught.value.hint  # says what to do

    @given(st.text(max_size=120))
    def test_valid_names_are_one_safe_path_segment(self, name: str) -> None:
        try:
            validate_name(name, "team")
        except InvalidNameError:
            return
        assert name and "/" not in name and "\\" not in name and ".." not in name
        assert not name.startswith(("-", ".")) and name.isascii() and name.isprintable()
        assert " " not in name and len(name) <= 100
