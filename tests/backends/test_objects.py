"""cp_manage.backends.objects: object ids and DVC's storage layout (pure logic, no I/O)."""

from __future__ import annotations

import hashlib
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cp_manage.backends.objects import ObjectId, is_object_id, object_key
from cp_manage.backends.pointer import Pointer
from cp_manage.errors import CPVError, InvalidObjectIdError

MD5 = hashlib.md5(b"weights").hexdigest()
md5s = st.binary(max_size=64).map(lambda data: hashlib.md5(data).hexdigest())


def test_a_file_object() -> None:
    oid = ObjectId(MD5)
    assert oid == MD5 and isinstance(oid, str)
    assert not oid.is_listing
    assert oid.md5 == MD5
    assert oid.key == f"files/md5/{MD5[:2]}/{MD5[2:]}"


def test_a_listing() -> None:
    oid = ObjectId.listing(MD5)
    assert oid == f"{MD5}.dir"
    assert oid.is_listing
    assert oid.md5 == MD5
    assert oid.key == f"files/md5/{MD5[:2]}/{MD5[2:]}.dir"  # where DVC 3 puts it
    assert ObjectId(f"{MD5}.dir") == oid and ObjectId(f"{MD5}.dir").is_listing


def test_of_picks_the_form() -> None:
    assert ObjectId.of(MD5, listing=False) == MD5
    assert ObjectId.of(MD5, listing=True) == ObjectId.listing(MD5)


@pytest.mark.parametrize("text", [
    "", "abc", MD5.upper(), MD5[:-1], MD5 + "0", MD5 + ".DIR", MD5 + ".dir.dir", MD5 + ".txt",
    f"{MD5}\n", "../" + MD5[3:], "g" * 32, f"{MD5[:2]}/{MD5[2:]}",
])
def test_malformed_text_is_refused_with_a_clear_error(text: str) -> None:
    assert not is_object_id(text)
    with pytest.raises(InvalidObjectIdError) as caught:
        ObjectId(text)
    assert isinstance(caught.value, CPVError) and isinstance(caught.value, ValueError)
    assert caught.value.text == text
    assert repr(text) in str(caught.value) and "32 lowercase hex digits" in str(caught.value)
    assert "cpv doctor" in str(caught.value)


def test_the_listing_of_a_listing_is_refused() -> None:
    with pytest.raises(InvalidObjectIdError):
        ObjectId.listing(f"{MD5}.dir")


def test_behaves_as_the_text_it_is() -> None:
    oid = ObjectId.listing(MD5)
    assert {oid} == {f"{MD5}.dir"} and hash(oid) == hash(f"{MD5}.dir")
    assert ObjectId(oid) is oid
    assert sorted([ObjectId(MD5), oid]) == sorted([MD5, f"{MD5}.dir"])
    assert object_key(oid) == oid.key
    copied = pickle.loads(pickle.dumps(oid))
    assert copied == oid and isinstance(copied, ObjectId) and copied.is_listing


def test_a_pointer_names_its_object_in_plain_text() -> None:
    file_oid = Pointer(path="model.bin", md5=MD5, size=3).oid
    assert file_oid == ObjectId(MD5) and type(file_oid) is str  # YAML writers need a str
    folder = ObjectId(Pointer(path="data", md5=MD5, size=3, nfiles=1).oid)
    assert folder.is_listing and folder.md5 == MD5


@given(md5s, st.booleans())
def test_round_trip(md5: str, listing: bool) -> None:
    oid = ObjectId.of(md5, listing=listing)
    assert is_object_id(oid)
    assert ObjectId(str(oid)) == oid
    assert (oid.md5, oid.is_listing) == (md5, listing)
    assert oid.key.replace("/", "").removeprefix("filesmd5") == oid
