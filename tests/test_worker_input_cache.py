"""worker.input_cache: a worker process's memory of recently read inputs, within its budget."""

from __future__ import annotations

import threading

from worker.input_cache import InputBytesCache, process_cache


class Fetches:
    """A storage stand-in that counts what it was asked for (the bytes name the key)."""

    def __init__(self, size: int = 10) -> None:
        self.size = size
        self.asked: list[str] = []

    def __call__(self, key: str) -> bytes:
        self.asked.append(key)
        return key.encode()[:1] * self.size


def test_given_key_read_twice_expect_one_fetch_and_same_bytes() -> None:
    cache, fetch = InputBytesCache(100), Fetches()
    first, first_hit = cache.get_or_fetch("a", fetch)
    again, again_hit = cache.get_or_fetch("a", fetch)
    assert first == again == b"a" * 10 and (first_hit, again_hit) == (False, True)
    assert fetch.asked == ["a"] and (cache.hits, cache.misses) == (1, 1)


def test_given_full_budget_expect_least_recently_used_evicted_and_size_within_budget() -> None:
    # given a budget of four 10-byte inputs, holding a, b, c, d, with a read again last
    cache, fetch = InputBytesCache(40), Fetches()
    for key in ("a", "b", "c", "d", "a"):
        cache.get_or_fetch(key, fetch)
    # when a fifth arrives
    cache.get_or_fetch("e", fetch)
    # expect b (the least recently used) gone, the rest kept, and the budget held
    assert "b" not in cache and all(k in cache for k in ("a", "c", "d", "e"))
    assert cache.size_bytes == 40
    cache.get_or_fetch("b", fetch)
    assert fetch.asked == ["a", "b", "c", "d", "e", "b"]


def test_given_input_over_a_quarter_of_the_budget_expect_served_but_not_kept() -> None:
    cache, fetch = InputBytesCache(39), Fetches(size=10)
    cache.get_or_fetch("small", fetch)  # 10 bytes: 10 * 4 > 39, not kept
    assert "small" not in cache and cache.size_bytes == 0
    big_budget = InputBytesCache(40)
    big_budget.get_or_fetch("small", fetch)
    assert "small" in big_budget and big_budget.size_bytes == 10


def test_given_threads_reading_keys_expect_size_equal_to_the_kept_entries() -> None:
    cache, fetch = InputBytesCache(200), Fetches()

    def reader(offset: int) -> None:
        for i in range(300):
            key = chr(ord("a") + (i * 7 + offset) % 26)
            assert cache.get_or_fetch(key, fetch)[0] == key.encode() * 10

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    kept = [k for k in map(chr, range(ord("a"), ord("z") + 1)) if k in cache]
    assert cache.size_bytes == 10 * len(kept) <= 200


def test_given_same_budget_expect_one_cache_per_process_and_a_new_budget_a_new_one() -> None:
    assert process_cache(1000) is process_cache(1000)
    assert process_cache(2000) is not process_cache(1000)


def test_given_two_threads_missing_the_same_key_expect_both_served_and_it_counted_once() -> None:
    # given a fetch that waits until both threads are inside it (both missed the key)
    cache, fetch = InputBytesCache(100), Fetches()
    both_in = threading.Barrier(2, timeout=10)

    def slow_fetch(key: str) -> bytes:
        both_in.wait()
        return fetch(key)

    got: list[bytes] = []
    threads = [threading.Thread(target=lambda: got.append(cache.get_or_fetch("a", slow_fetch)[0])) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # expect both answered, two fetches, and the key's bytes counted once
    assert got == [b"a" * 10] * 2 and fetch.asked == ["a", "a"]
    assert "a" in cache and cache.size_bytes == 10
