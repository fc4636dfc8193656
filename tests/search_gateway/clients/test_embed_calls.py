"""The one packer of Embed calls (clients/embed_calls.py) that uploads, reindex jobs and the
search share: its splits by count and bytes, and its retry of a refused call one image at a time."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from search_gateway.clients.embed_calls import embed_or_each_alone, pack


def test_nothing_packs_into_no_calls() -> None:
    assert pack([], len, max_items=3, max_bytes=10) == []
    assert pack([]) == []


def test_without_limits_everything_goes_in_one_call() -> None:
    assert pack([b"a", b"bb", b"ccc"], len) == [[b"a", b"bb", b"ccc"]]


def test_calls_hold_at_most_max_items_in_order() -> None:
    assert pack(list(range(7)), max_items=3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert pack(list(range(6)), max_items=3) == [[0, 1, 2], [3, 4, 5]]
    assert pack(list(range(3)), max_items=1) == [[0], [1], [2]]


def test_a_call_takes_items_up_to_exactly_the_byte_limit() -> None:
    items = [b"x" * 4, b"x" * 6, b"x" * 10, b"x" * 1]
    # 4 + 6 == 10 fits exactly; 10 alone fits exactly; the next 1 would make 11.
    assert [[len(i) for i in call] for call in pack(items, len, max_bytes=10)] == [[4, 6], [10], [1]]
    assert [[len(i) for i in call] for call in pack(items, len, max_bytes=9)] == [[4], [6], [10], [1]]


def test_an_item_over_the_byte_limit_alone_gets_a_call_of_its_own() -> None:
    items = [b"x" * 2, b"x" * 50, b"x" * 3, b"x" * 60]
    assert [[len(i) for i in call] for call in pack(items, len, max_bytes=10)] == [[2], [50], [3], [60]]
    assert [[len(i) for i in call] for call in pack([b"x" * 50], len, max_bytes=10)] == [[50]]


def test_the_count_and_the_byte_limit_both_close_a_call() -> None:
    items = [b"x"] * 5 + [b"x" * 8, b"x" * 2]
    calls = pack(items, len, max_items=3, max_bytes=10)
    assert [[len(i) for i in call] for call in calls] == [[1, 1, 1], [1, 1, 8], [2]]


class Refused(Exception):
    pass


async def test_a_refused_batch_goes_again_one_image_at_a_time() -> None:
    calls: list[list[str]] = []
    embedded: list[tuple[list[str], str]] = []
    refused: list[str] = []

    async def embed(part: Sequence[str]) -> str:
        calls.append(list(part))
        if "bad" in part:
            raise Refused(f"no {part}")
        return "+".join(part)

    async def use(part: Sequence[str], reply: str) -> None:
        embedded.append((list(part), reply))

    async def alone(item: str, exc: Refused) -> None:
        refused.append(item)

    await embed_or_each_alone(["a", "bad", "b"], embed, use, Refused, alone)
    assert calls == [["a", "bad", "b"], ["a"], ["bad"], ["b"]]
    assert embedded == [(["a"], "a"), (["b"], "b")]
    assert refused == ["bad"]

    calls.clear()
    embedded.clear()
    await embed_or_each_alone(["a", "b"], embed, use, Refused, alone)
    assert calls == [["a", "b"]] and embedded == [(["a", "b"], "a+b")]


async def test_other_errors_are_not_retried_and_the_users_errors_are_its_own() -> None:
    calls: list[list[str]] = []

    async def down(part: Sequence[str]) -> str:
        calls.append(list(part))
        raise RuntimeError("down")

    async def use(part: Sequence[str], reply: str) -> None:
        raise Refused("raised while using the reply: not a refusal of the call")

    async def alone(item: str, exc: Refused) -> None:
        raise AssertionError("not refused")

    with pytest.raises(RuntimeError):
        await embed_or_each_alone(["a", "b"], down, use, Refused, alone)
    assert calls == [["a", "b"]]

    async def fine(part: Sequence[str]) -> str:
        return "ok"

    with pytest.raises(Refused):
        await embed_or_each_alone(["a", "b"], fine, use, Refused, alone)
