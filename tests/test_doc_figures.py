"""The docs quote benchmark figures only as tools/doc_figures.py writes them.

Every figure comes from bench/results/*.json, between ``<!-- figures:NAME -->`` and
``<!-- /figures -->`` markers, with the command and date of its run, so that no page can
disagree with another or with the last run (issue 29 found a thread pool's latency given
as "half", "about 1.4x" and "0.78x" on three pages).  Fails when a page was edited by
hand between the markers, when the results changed and the pages were not regenerated
(`./dev docs-figures`), or when a page quotes a speed figure outside the markers.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import doc_figures  # from tools/, which is not a package

PAGES = doc_figures.PAGES
IDS = [str(p.relative_to(ROOT)) for p in PAGES]

# A number followed by a unit of time, a ratio, a rate or a share: what a measurement
# looks like ("39.9 µs", "0.78x", "1.3–1.5x", "11,377 MB/s", "98%").
FIGURE = re.compile(
    r"(?<![\w.])(?:~|about )?\d[\d,]*(?:\.\d+)?(?:\s?[–-]\s?\d[\d,]*(?:\.\d+)?)?"
    r"\s?(?:x(?![\w])|×|µs|us\b|ns\b|ms\b|s\b|MB/s|GB/s|MiB/s|tasks/s|%)"
)
# Ratios and amounts in words, as the pages had them ("an eighth of a process pool's",
# "half a thread pool's", "a few hundred µs").
WORDS = re.compile(
    r"\b(?:half|a third|a quarter|a fifth|a sixth|an eighth|twice|\w+ times)\b[^.]{0,30}\bpool'?s?\b"
    r"|\b(?:a few|several|tens of|hundreds of)(?: hundred| thousand)? (?:µs|ms|ns|MB/s|tasks/s)",
    re.I,
)

# Numbers with a unit that are not measurements: settings of the code, and the
# parameters of a benchmark or an example.  Each with why.  (page, text)
NOT_FIGURES = {
    ("README.md", "1 ms"): "the longest poll of an idle worker and of result(), a setting (_worker._IDLE_SPIN_MAX, "
    "_interp_side._SPIN_MAX)",
    ("guide.md", "1 ms"): "the same setting",
    ("pool.md", "50 µs"): "the shortest poll of an idle worker and of result(), a setting (_worker._IDLE_SPIN, "
    "_interp_side._CALLER_SPIN)",
    ("pool.md", "200 µs"): "below this average task time result() polls when no CPU is free, a setting "
    "(_interp_side._SHORT_TASK)",
    ("pool.md", "1 ms"): "the longest polls, and the batch after which a worker polls, settings (_worker._SHORT_BATCH, "
    "_worker._IDLE_SPIN_MAX, _interp_side._SPIN_MAX)",
    ("pool.md", "30 s"): "exit_timeout's default, a setting",
    ("limitations.md", "50 ms"): "how long an idle worker keeps its last large result, a setting (_worker._LENT_KEPT)",
    ("limitations.md", "0.1 s"): "how often manygil's waits wake to let Ctrl-C through, a setting",
    ("limitations.md", "30 s"): "exit_timeout's default, a setting",
    ("limitations.md", "2 s"): "the bound of a wait for an interpreter's destruction, a setting",
    ("maintainers.md", "300 s"): "--own-gil-timeout's default without pytest-timeout, a setting",
    ("README.md", "36 s"): "how long building the chroot took, in the Development section (another developer's); "
    "not a benchmark's figure",
}


def _prose(text: str) -> str:
    """The page without its code blocks, inline code and generated figures."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    text = doc_figures.MARKED.sub("", text)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.sub(r"\s+", " ", text)  # a figure may wrap: "2.0\nms", "a third of\na process pool's"


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_the_generated_figures_are_those_of_the_results(page):
    text = page.read_text()
    assert doc_figures.render(text) == text, (
        f"{page.name}: the figures between its markers differ from bench/results/*.json (edited by hand, or "
        "the results changed since): run ./dev docs-figures"
    )


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_no_figure_is_quoted_by_hand(page):
    prose = _prose(page.read_text())
    found = [m.group(0) for m in FIGURE.finditer(prose)]
    found = [f for f in found if (page.name, f) not in NOT_FIGURES]
    found += [m.group(0) for m in WORDS.finditer(prose)]
    assert not found, (
        f"{page.name} quotes figures by hand: {found}. Quote a benchmark's figure through a "
        "<!-- figures:NAME --> marker (tools/doc_figures.py), or, for a setting that is not a "
        "measurement, list it in NOT_FIGURES with the reason"
    )


def test_every_exception_is_still_needed():
    used = set()
    for page in PAGES:
        prose = _prose(page.read_text())
        used |= {(page.name, m.group(0)) for m in FIGURE.finditer(prose)}
    assert set(NOT_FIGURES) <= used, f"no longer in the pages: {sorted(set(NOT_FIGURES) - used)}"


def test_the_pages_quote_every_piece_and_name_its_run():
    """Every piece is used somewhere, and each names a command and a date (or says that
    its file has none)."""
    used = {m.group(1) for page in PAGES for m in doc_figures.MARKED.finditer(page.read_text())}
    assert used == set(doc_figures.FIGURES)
    for name, make in doc_figures.FIGURES.items():
        text = make()
        assert "./dev bench" in text, f"{name} names no command"
        assert re.search(r"\d{4}-\d{2}-\d{2}|date not recorded", text), f"{name} names no date"


def test_the_scan_finds_figures_written_by_hand():
    """The check itself: what the pages said before the figures were generated."""
    prose = _prose(
        "round trip 25–50 µs here, about 1.4x a thread pool's, 0.78x in one run, 38.9 µs, "
        "at 6,000–7,900 MB/s, 11 ms, 98% of it, 66,586 tasks/s\n"
        "`./dev bench` <!-- figures:latency-manygil -->39.9 µs<!-- /figures -->"
    )
    assert [m.group(0) for m in FIGURE.finditer(prose)] == [
        "25–50 µs", "about 1.4x", "0.78x", "38.9 µs", "6,000–7,900 MB/s", "11 ms", "98%", "66,586 tasks/s",
    ]
    for words in ("costs about a third of a process pool's", "an eighth of\na process pool's",
                  "is half a thread pool's", "(a few hundred µs, the pool's round trip)"):
        assert WORDS.search(_prose(words)), words


def test_a_new_run_makes_the_pages_stale(tmp_path, monkeypatch):
    """With other results (a fake copy of bench/results), the same pages no longer match:
    the check sees a run that was not written into the pages, and the date goes with it."""
    for f in doc_figures.RESULTS.glob("*.json"):
        (tmp_path / f.name).write_text(f.read_text())
    latest = json.loads((tmp_path / "latest.json").read_text())
    latest["results"]["manygil"]["latency_us"] = 123.4
    latest["date"] = "2031-01-02 03:04"
    (tmp_path / "latest.json").write_text(json.dumps(latest))
    monkeypatch.setattr(doc_figures, "RESULTS", tmp_path)
    page = (ROOT / "docs" / "pool.md").read_text()
    new = doc_figures.render(page)
    assert new != page
    assert f"123.4 µs (`./dev bench`, CPython {latest['python']}, 2031-01-02 03:04)" in new
    assert doc_figures.render(new) == new


def test_the_payload_breakdown_measures_each_encoding_and_adds_up():
    # bench/payloads.py's third table: fixed + encoding + the rest = the round trip, and
    # "at best" = a forkserver pool's round trip over manygil's encoding.
    sys.path.insert(0, str(ROOT / "bench"))
    import payloads  # bench/payloads.py

    value = payloads.payload("records")
    assert payloads.encoding_us("threads", value) is None  # nothing of its own to encode
    for executor in ("manygil", "process-forkserver"):
        assert payloads.encoding_us(executor, value) > 0  # type: ignore[operator]
    results = {
        "manygil": {"ints": {"round_trip_us": 100.0, "fixed_us": 20.0, "encode_us": 90.0}},
        "process-forkserver": {"ints": {"round_trip_us": 300.0, "fixed_us": 100.0, "encode_us": 150.0}},
    }
    table = payloads.where_it_goes(results)
    assert "| ints | 100 = 20 + 90 − 10 | 300 = 100 + 150 + 50 | 3.33x |" in table, table
    assert "| dict | n/a | n/a | n/a |" in table, table
