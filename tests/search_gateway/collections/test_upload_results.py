"""An upload's results (collections/uploads.py, UploadResult) as the reply writes them: the
keys and their order are what clients and the bulk importer read."""

from __future__ import annotations

import json

from search_gateway.collections.uploads import QUOTA_REACHED, Input, UploadResult


def _text(result: UploadResult) -> str:
    return json.dumps(result.json())


def test_each_kind_of_result_writes_its_keys_in_the_replys_order() -> None:
    plain, renamed = Input("a.jpg", data=b"x"), Input("b_1.jpg", data=b"x", note="renamed: b.jpg was taken")
    assert _text(UploadResult.added(plain, "id1", "/t/1")) == (
        '{"input": "a.jpg", "status": "added", "id": "id1", "thumbnail": "/t/1"}')
    assert _text(UploadResult.duplicate(plain, "id1")) == '{"input": "a.jpg", "status": "duplicate", "id": "id1"}'
    assert _text(UploadResult.rejected(plain, "Not an image.")) == (
        '{"input": "a.jpg", "status": "rejected", "reason": "Not an image."}')
    assert _text(UploadResult.rejected(plain, "Full.", code=QUOTA_REACHED)) == (
        '{"input": "a.jpg", "status": "rejected", "code": "quota_reached", "reason": "Full."}')
    assert _text(UploadResult.added(renamed, "id2", "/t/2")) == (
        '{"input": "b_1.jpg", "status": "added", "id": "id2", "thumbnail": "/t/2", '
        '"note": "renamed: b.jpg was taken"}')


def test_a_picture_sent_twice_in_one_request() -> None:
    first, again = Input("a.jpg", data=b"x"), Input("a2.jpg", data=b"x", note="n")
    assert UploadResult.added(first, "id1", "/t/1").repeated_as(again).json() == {
        "input": "a2.jpg", "status": "duplicate", "id": "id1", "note": "n"}
    assert UploadResult.duplicate(first, "id1").repeated_as(again).json() == {
        "input": "a2.jpg", "status": "duplicate", "id": "id1", "note": "n"}
    assert list(UploadResult.rejected(first, "Full.", code=QUOTA_REACHED).repeated_as(again).json().items()) == [
        ("input", "a2.jpg"), ("status", "rejected"), ("code", "quota_reached"), ("reason", "Full."), ("note", "n")]
