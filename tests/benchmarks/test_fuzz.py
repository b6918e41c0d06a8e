"""`make bench`'s fuzz section: every reader classified case by case, the table rendered."""

from benchmarks import fuzz


def test_every_reader_is_fuzzed_and_none_raises_or_accepts_garbage():
    result = fuzz.run(cases=30)
    # Transformations of any text, which never refuse it: all of it comes back made safe.
    always = {"model text in reports (inert, HTML)", "credentials in URLs (redact)"}
    assert len(result["targets"]) == 10 and always <= set(result["targets"])
    for name, counts in result["targets"].items():
        assert sum(counts.values()) == 30, name
        assert counts["traceback"] == 0 and counts["accepted_garbage"] == 0, (name, counts)
        if name in always:
            assert counts["accepted"] == 30, name
        else:
            assert counts["clean_error"] > 0, name  # the generators do reach the error paths
    table = fuzz.render(result)
    assert table[0] == "## Fuzzing the readers of outside input" and sum(l.startswith("| ") for l in table) == 2 + 10
