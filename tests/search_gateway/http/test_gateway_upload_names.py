"""Uploads into a collection (issue 19, items 10 and 11): the file name a client sends is
kept as a display name (no control or direction characters, no '..' or empty path parts, at
most 255 characters) and the reply says when it was changed; a refused multipart body names
the limit it passed. Real embed and scraper servers, the embedded gallery and local blobs."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from search_gateway.http.filenames import MAX_NAME, clean_name
from tests.support.background import BackgroundServer
from tests.support.collections_support import A, CollectionsClient
from tests.support.collections_support import collection_settings as _settings
from tests.support.gateway_stack import Site
from tests.support.gateway_support import run_gateway
from tests.support.images import jpeg


def _multipart(parts: list[tuple[str, bytes | None, bytes]]) -> tuple[bytes, str]:
    """A multipart body written by hand: (field, raw file name or None, content) per part.

    By hand because client libraries escape the name (aiohttp percent-encodes a NUL), and
    the point is what the gateway does with the bytes a client may really send.
    """
    boundary = uuid.uuid4().hex
    body = b""
    for field, filename, content in parts:
        disposition = f'Content-Disposition: form-data; name="{field}"'.encode()
        if filename is not None:
            disposition += b'; filename="' + filename + b'"'
        body += b"--" + boundary.encode() + b"\r\n" + disposition + b"\r\n"
        if filename is not None:
            body += b"Content-Type: image/jpeg\r\n"
        body += b"\r\n" + content + b"\r\n"
    body += b"--" + boundary.encode() + b"--\r\n"
    return body, f"multipart/form-data; boundary={boundary}"


async def _post(client: CollectionsClient, name: str, parts: list[tuple[str, bytes | None, bytes]]) -> tuple[int, Any]:
    body, content_type = _multipart(parts)
    return await client.call("POST", f"/collections/{name}/images", {**A, "Content-Type": content_type}, data=body)


@pytest.mark.parametrize(("sent", "kept"), [
    ("rose.jpg", "rose.jpg"),
    ("shop/flash/2024/rose.jpg", "shop/flash/2024/rose.jpg"),  # a folder upload's relative path stays
    ("nul\x00here.jpg", "nulhere.jpg"),
    ("\x1b[31mred.jpg", "[31mred.jpg"),
    ("flash\u202egpj.exe", "flashgpj.exe"),  # a right-to-left override hid the real extension
    ("\u2066a\u2069\u200eb\u200f\ufeff.png", "ab.png"),  # isolates, direction marks, a BOM
    ("line\u2028break.jpg", "linebreak.jpg"),
    ("../../etc/cron.d/x.jpg", "etc/cron.d/x.jpg"),
    ("/abs//./dir/../x.jpg", "abs/dir/x.jpg"),
    ("C:\\fakepath\\x.jpg", "C:/fakepath/x.jpg"),
    (" .. /x.jpg", "x.jpg"),
    ("\x00\u202e", "file 3"),  # nothing printable: the fallback
    ("", "file 3"),
])
def test_a_sent_name_becomes_a_display_name(sent: str, kept: str) -> None:
    cleaned = clean_name(sent, "file 3")
    assert cleaned.name == kept
    assert (cleaned.note is None) == (sent == kept), cleaned
    if cleaned.note is not None:
        assert f"'{kept}'" in cleaned.note


def test_a_long_name_is_cut_keeping_its_extension() -> None:
    cleaned = clean_name("a/" + "b" * 300 + ".jpeg", "file 1")
    assert len(cleaned.name) == MAX_NAME and cleaned.name.endswith("b.jpeg") and cleaned.name.startswith("a/bbb")
    assert cleaned.note is not None and f"cut to {MAX_NAME} characters" in cleaned.note
    assert clean_name("c" * 400, "file 1").name == "c" * MAX_NAME  # no extension to keep
    assert clean_name("d" * MAX_NAME, "file 1").note is None  # the limit itself is kept as sent


async def test_file_names_are_stored_as_display_names_and_the_reply_says_so(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    sent = {"nul\x00here.jpg": "nulhere.jpg",
            "\x1b[2Jwiped.jpg": "[2Jwiped.jpg",
            "flash\u202egpj.exe": "flashgpj.exe",
            "../../../etc/passwd": "etc/passwd",
            "shop/flash/rose.jpg": "shop/flash/rose.jpg",
            "x" * 3000 + ".jpg": "x" * (MAX_NAME - 4) + ".jpg"}
    parts: list[tuple[str, bytes | None, bytes]] = [
        ("file", name.encode(), jpeg(70 + i, (96, 96))) for i, name in enumerate(sent)]
    async with aiohttp.ClientSession() as http, run_gateway(_settings(embed, scraper, site, tmp_path)) as gw:
        client = CollectionsClient(http, gw)
        assert (await client.call("POST", "/collections", json={"name": "names"}))[0] == 201
        status, body = await _post(client, "names", parts)
        assert status == 200, body
        results = body["results"]
        assert [r["status"] for r in results] == ["added"] * len(sent), results
        # Each result names the file as stored, and says so where that is not the name sent.
        assert [r["input"] for r in results] == list(sent.values())
        for result, (original, stored) in zip(results, sent.items(), strict=True):
            assert ("note" in result) == (original != stored), result
        assert "control and direction characters removed" in results[0]["note"]
        assert "'..' path parts removed" in results[3]["note"]
        assert "cut to 255 characters" in results[5]["note"]
        status, page = await client.call("GET", "/collections/names/images")
        assert status == 200, page
        assert sorted(i["filename"] for i in page["images"]) == sorted(sent.values())
        for image in page["images"]:
            status, one = await client.call("GET", f"/collections/names/images/{image['id']}")
            assert status == 200 and one["filename"] == image["filename"], one


async def test_a_name_too_long_for_the_parser_is_a_clear_400(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as http, run_gateway(_settings(embed, scraper, site, tmp_path)) as gw:
        client = CollectionsClient(http, gw)
        assert (await client.call("POST", "/collections", json={"name": "long"}))[0] == 201
        # python-multipart's limit is one header line of 4,224 bytes: 4,168 characters of name.
        status, body = await _post(client, "long", [("file", b"n" * 4169, jpeg(81, (96, 96)))])
        assert status == 400, body
        assert "Invalid multipart data" not in body["detail"] and f"at most {MAX_NAME} characters" in body["detail"]
        status, body = await _post(client, "long", [("file", b"n" * 4168, jpeg(80, (96, 96)))])
        assert status == 200 and body["results"][0]["input"] == "n" * MAX_NAME, body


async def test_too_many_text_fields_name_the_fields_limit_not_the_images_limit(
        embed: BackgroundServer, scraper: BackgroundServer, site: Site, tmp_path: Path) -> None:
    settings = _settings(embed, scraper, site, tmp_path, collection_max_files=10)
    async with aiohttp.ClientSession() as http, run_gateway(settings) as gw:
        client = CollectionsClient(http, gw)
        assert (await client.call("POST", "/collections", json={"name": "fields"}))[0] == 201
        tags: list[tuple[str, bytes | None, bytes]] = [("tags", None, b"flash")] * 999
        status, body = await _post(client, "fields", [("file", b"one.jpg", jpeg(90, (96, 96))), *tags])
        assert status == 413, body
        assert "At most 42 text fields" in body["detail"] and "images per request" not in body["detail"], body
        # The images limit still names itself (the importer reads "At most N images per request").
        files: list[tuple[str, bytes | None, bytes]] = [("file", f"{i}.jpg".encode(), b"x") for i in range(11)]
        status, body = await _post(client, "fields", files)
        assert status == 413 and "At most 10 images per request (GATEWAY_COLLECTION_MAX_FILES)" in body["detail"], body
