"""harness.checks.stderr: forbidden patterns found in a stream fed in pieces, and a large stderr read in bounded
memory."""

from __future__ import annotations

import tracemalloc

from harness.checks.stderr import PatternScanner, scan_file, tail


def test_pattern_scanner_finds_a_pattern_split_across_chunks():
    scanner = PatternScanner(["RuntimeError", "re:CUDA error: \\w+"])
    assert scanner.feed("line one\nline two\nsomething Runtime") == {}
    found = scanner.feed("Error happened\nthen a CUDA err")
    assert found == {"RuntimeError": (3, "something RuntimeError happened")}
    scanner.feed("or: device-side assert\n")
    scanner.finish()
    assert scanner.hits["re:CUDA error: \\w+"] == (4, "then a CUDA error: device-side assert")
    assert scanner.pending == []


def test_pattern_scanner_reports_the_first_line_and_a_last_line_without_newline():
    scanner = PatternScanner(["boom"])
    scanner.feed("a\nboom 1\nboom 2\n")
    assert scanner.hits == {"boom": (2, "boom 1")}
    tail_only = PatternScanner(["end"])
    tail_only.feed("a\nb\nthe end")
    assert tail_only.hits == {}
    assert tail_only.finish() == {"end": (3, "the end")}


def test_pattern_scanner_line_numbers_across_many_chunks():
    scanner = PatternScanner(["needle"])
    text = "".join(f"line {i}\n" for i in range(1, 1000)) + "a needle here\n"
    for start in range(0, len(text), 7):
        scanner.feed(text[start : start + 7])
    scanner.finish()
    assert scanner.hits == {"needle": (1000, "a needle here")}


def test_pattern_scanner_finds_a_pattern_in_a_very_long_line():
    scanner = PatternScanner(["RuntimeError"])
    scanner.feed("x" * 5000 + "RuntimeError" + "y" * 4090)
    scanner.feed("\n")
    scanner.finish()
    assert "RuntimeError" in scanner.hits


def test_scan_file_of_50_mb_stays_bounded_in_memory(tmp_path):
    path = tmp_path / "stderr.log"
    line = "step progress " + "." * 85 + "\n"  # 100 bytes
    block = line * 10_000  # 1 MB
    with open(path, "w") as stream:
        for _ in range(50):
            stream.write(block)
        stream.write("RuntimeError: near the end\n")
        stream.write(block[: len(line) * 3])
    tracemalloc.start()
    try:
        hits = scan_file(path, ["RuntimeError", "never there"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert hits == {"RuntimeError": (500_001, "RuntimeError: near the end")}
    assert peak < 20 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"


def test_scan_file_stops_reading_when_every_pattern_is_found(tmp_path):
    path = tmp_path / "stderr.log"
    path.write_text("first\n" + "filler\n" * 10)
    assert scan_file(path, ["first"]) == {"first": (1, "first")}
    assert scan_file(path, []) == {}


def test_tail_reads_only_the_end(tmp_path):
    path = tmp_path / "big.log"
    with open(path, "w") as stream:
        stream.write(("early line\n") * 1_000_000)  # 11 MB
        stream.write("".join(f"late {i}\n" for i in range(30)))
    tracemalloc.start()
    try:
        text = tail(path, lines=5)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert text == "late 25\nlate 26\nlate 27\nlate 28\nlate 29"
    assert peak < 1024 * 1024
    assert len(tail(path, lines=10_000, max_bytes=100)) <= 100
    assert tail(tmp_path / "missing.log") == ""
