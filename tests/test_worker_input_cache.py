"""worker.input_cache: a worker process's memory of recently read inputs, within its budget."""

from __future__ import annotations

import threading

from worker.input_cache import InputBytesCache, process_cache


def fill(cache: InputBytesCache, *keys: str, size: int = 10) -> None:
    """Read each key as a job would: from memory when kept, else 'fetched' and put."""
    for key in keys:
        if cache.get(key) is None:
            cache.put(key, key.encode()[:1] * size)


def test_given_key_put_expect_same_bytes_back_and_hits_counted() -> None:
    cache = InputBytesCache(100)
    assert cache.get("a") is None
    cache.put("a", b"a" * 10)
    assert cache.get("a") == b"a" * 10
    assert (cache.hits, cache.misses) == (1, 1)


def test_given_full_budget_expect_least_recently_used_evicted_and_size_within_budget() -> None:
    # given a budget of four 10-byte inputs, holding a, b, c, d, with a read again last
    cache = InputBytesCache(40)
    fill(cache, "a", "b", "c", "d", "a")
    # when a fifth arrives
    fill(cache, "e")
    # expect b (the least recently used) gone, the rest kept, and the budget held
    assert "b" not in cache and all(k in cache for k in ("a", "c", "d", "e"))
    assert cache.size_bytes == 40


def test_given_input_over_a_quarter_of_the_budget_expect_not_kept() -> None:
    small_budget = InputBytesCache(39)
    small_budget.put("x", b"x" * 10)  # 10 * 4 > 39
    assert "x" not in small_budget and small_budget.size_bytes == 0
    big_budget = InputBytesCache(40)
    big_budget.put("x", b"x" * 10)
    assert "x" in big_budget and big_budget.size_bytes == 10


def test_given_same_key_put_twice_expect_it_counted_once() -> None:
    # two threads that missed the same key both put it
    cache = InputBytesCache(100)
    cache.put("a", b"a" * 10)
    cache.put("a", b"a" * 10)
    assert cache.size_bytes == 10 and cache.get("a") == b"a" * 10


def test_given_threads_reading_keys_expect_size_equal_to_the_kept_entries() -> None:
    cache = InputBytesCache(200)

    def reader(offset: int) -> None:
        for i in range(300):
            key = chr(ord("a") + (i * 7 + offset) % 26)
            fill(cache, key)
            got = cache.get(key)
            assert got is None or got == key.encode() * 10  # evicted meanwhile, or the right bytes

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
