"""fcos_core.benchmark.timing.interleaved: every fn once per round, warm-up rounds dropped, and with
``rotate`` each round starting one fn later (so no fn always runs right after the same one)."""
from fcos_core.benchmark.timing import interleaved, paired_ratio


def _recorder(calls, name):
    return lambda: calls.append(name)


def test_interleaved_in_order_drops_warmup():
    calls = []
    fns = {n: _recorder(calls, n) for n in "abc"}
    times = interleaved(fns, runs=2, warmup=1, device="cpu")
    assert calls == list("abcabcabc")
    assert list(times) == list("abc") and all(len(t) == 2 and min(t) >= 0 for t in times.values())


def test_interleaved_rotate_starts_each_round_one_later():
    calls = []
    fns = {n: _recorder(calls, n) for n in "abc"}
    times = interleaved(fns, runs=3, warmup=1, device="cpu", rotate=True)
    assert calls == list("abc" "bca" "cab" "abc")
    # each timed round still holds one time per fn, in the fns' order
    assert list(times) == list("abc") and all(len(t) == 3 for t in times.values())
    # the predecessors of "a" differ between rounds
    starts = [calls[i:i + 3] for i in range(0, 12, 3)]
    assert {tuple(s).index("a") for s in starts} == {0, 1, 2}


def test_paired_ratio_is_the_median_of_per_round_ratios():
    assert paired_ratio([1.0, 2.0, 9.0], [2.0, 2.0, 3.0]) == 1.0
    assert paired_ratio([], [1.0]) != paired_ratio([], [1.0])  # NaN


def test_reference_loop_runs_the_call_n_times():
    """deploy._repeated: n chosen so that the loop lasts about the asked seconds (here a call that
    counts itself: n >= 1, and one loop call runs it exactly n times)."""
    from fcos_core.benchmark import deploy

    calls = []
    loop, n = deploy._repeated(lambda: calls.append(1), 1e-3)
    before = len(calls)
    loop()
    assert before == 3 and n >= 1 and len(calls) - before == n
