"""The boot order is systemd-boot 252's, rule by rule, and boot counting renames like it."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from appliance.update.bootloader import (
    FALLBACK,
    PRIMARY,
    Entry,
    bless,
    boot_order,
    entries_dir,
    next_boot,
    parse_counter,
    parse_entry,
    read_entries,
    render_entry,
    simulate_boot,
    write_entry,
)
from appliance.update.versions import strverscmp

OPTIONS = "root=PARTLABEL=root-{slot} rw appliance.slot={slot}"


def names(entries: list[Entry]) -> list[str]:
    return [e.file_name for e in boot_order(entries)]


def test_versions_order_as_systemd_documents_it() -> None:
    older_to_newer = ["122.1", "123~rc1-1", "123", "123-a", "123-a.1", "123-1", "123-1.1",
                      "123^post1", "123.a-1", "123.1-1", "123a-1", "124-1"]
    for older, newer in itertools.pairwise(older_to_newer):
        assert strverscmp(older, newer) == -1 and strverscmp(newer, older) == 1
    assert strverscmp("0.10.0", "0.9.0") == 1
    assert strverscmp("007", "7") == 0


def test_entries_without_tries_left_come_last() -> None:
    bad = Entry("appliance-b+0-1.conf", sort_key=PRIMARY, version="9.0")
    good = Entry("appliance-a.conf", sort_key=FALLBACK, version="1.0")
    assert names([bad, good]) == ["appliance-a.conf", "appliance-b+0-1.conf"]


def test_entries_with_a_sort_key_come_before_those_without() -> None:
    plain = Entry("zzz.conf", version="9.0")
    keyed = Entry("aaa.conf", sort_key="zzz", version="1.0")
    assert names([plain, keyed]) == ["aaa.conf", "zzz.conf"]


def test_the_sort_key_decides_before_the_version() -> None:
    primary = Entry("appliance-a.conf", sort_key=PRIMARY, version="0.1.0")
    fallback = Entry("appliance-b.conf", sort_key=FALLBACK, version="0.2.0")
    assert names([fallback, primary]) == ["appliance-a.conf", "appliance-b.conf"]


def test_with_one_sort_key_the_newest_version_comes_first() -> None:
    old = Entry("x-1.conf", sort_key="k", version="0.9.0")
    new = Entry("x-2.conf", sort_key="k", version="0.10.0")
    assert names([old, new]) == ["x-2.conf", "x-1.conf"]


def test_with_one_version_the_greatest_file_name_comes_first() -> None:
    first = Entry("linux-5.conf", sort_key="k", version="1")
    second = Entry("linux-12.conf", sort_key="k", version="1")
    assert names([first, second]) == ["linux-12.conf", "linux-5.conf"]


def test_a_trial_entry_with_tries_left_is_not_bad() -> None:
    trial = Entry("appliance-b+1.conf", sort_key=PRIMARY)
    good = Entry("appliance-a.conf", sort_key=FALLBACK)
    assert next_boot([good, trial]) == trial
    assert (trial.state, good.state) == ("trial", "good")


@pytest.mark.parametrize(("name", "counter"), [
    ("appliance-b+1.conf", ("appliance-b", 1, 0)),
    ("appliance-b+0-1.conf", ("appliance-b", 0, 1)),
    ("foo+3+2-5.conf", ("foo+3", 2, 5)),
    ("appliance-b.conf", None),
    ("appliance-b+x.conf", None),
    ("appliance-b+1-.conf", None),
    ("appliance-b+1.conf.bak", None),
])
def test_the_counter_is_read_from_the_last_plus_before_dot_conf(
        name: str, counter: tuple[str, int, int] | None) -> None:
    assert parse_counter(name) == counter


def test_each_boot_attempt_moves_one_try_from_left_to_done() -> None:
    assert Entry("a+3.conf").next_name == "a+2-1.conf"
    assert Entry("a+1-2.conf").next_name == "a+0-3.conf"
    assert Entry("a+0-3.conf").next_name == "a+0-4.conf"
    assert Entry("a.conf").next_name == "a.conf"


def test_a_rendered_entry_parses_back() -> None:
    entry = parse_entry("appliance-b+1.conf", render_entry("b", "0.2.0", PRIMARY, OPTIONS))
    assert (entry.version, entry.sort_key, entry.linux, entry.initrd, entry.slot) == (
        "0.2.0", PRIMARY, "/appliance/b/vmlinuz", ("/appliance/b/initrd.img",), "b")
    assert entry.options == "root=PARTLABEL=root-b rw appliance.slot=b"
    assert entry.title == "Edge appliance 0.2.0 (slot b)"


def test_later_keys_win_options_add_up_and_comments_are_skipped() -> None:
    entry = parse_entry("x.conf", "# a comment\ntitle one\ntitle two\n  options a=1\n"
                                  "options\tb=2\nversion\n")
    assert (entry.title, entry.options, entry.version) == ("two", "a=1 b=2", None)


def esp_with(tmp_path: Path, *entries: tuple[str, str]) -> Path:
    esp = tmp_path / "esp"
    for slot in ("a", "b"):
        (esp / "appliance" / slot).mkdir(parents=True)
        (esp / "appliance" / slot / "vmlinuz").write_bytes(b"kernel")
    entries_dir(esp).mkdir(parents=True)
    for name, text in entries:
        (entries_dir(esp) / name).write_text(text)
    return esp


def test_a_simulated_boot_counts_the_attempt_by_renaming(tmp_path: Path) -> None:
    esp = esp_with(tmp_path, ("appliance-a.conf", render_entry("a", "1", FALLBACK, OPTIONS)),
                   ("appliance-b+1.conf", render_entry("b", "2", PRIMARY, OPTIONS)))
    cmdline = tmp_path / "cmdline"
    booted = simulate_boot(esp, cmdline)
    assert booted is not None and booted.file_name == "appliance-b+0-1.conf"
    assert "appliance.slot=b" in cmdline.read_text()
    assert sorted(p.name for p in entries_dir(esp).iterdir()) == [
        "appliance-a.conf", "appliance-b+0-1.conf"]
    fallback = simulate_boot(esp)
    assert fallback is not None and fallback.file_name == "appliance-a.conf"


def test_blessing_drops_the_counter(tmp_path: Path) -> None:
    esp = esp_with(tmp_path, ("appliance-b+0-1.conf", render_entry("b", "2", PRIMARY, OPTIONS)))
    blessed = bless(esp, read_entries(esp)[0])
    assert blessed.file_name == "appliance-b.conf"
    assert [e.file_name for e in read_entries(esp)] == ["appliance-b.conf"]


def test_an_entry_whose_kernel_is_missing_is_no_boot_choice(tmp_path: Path) -> None:
    esp = esp_with(tmp_path, ("appliance-a.conf", render_entry("a", "1", FALLBACK, OPTIONS)),
                   ("appliance-b+1.conf", render_entry("b", "2", PRIMARY, OPTIONS)))
    (esp / "appliance" / "b" / "vmlinuz").unlink()
    assert [e.file_name for e in read_entries(esp)] == ["appliance-a.conf"]


def test_dot_files_scratch_files_and_auto_entries_are_ignored(tmp_path: Path) -> None:
    text = render_entry("b", "2", PRIMARY, OPTIONS)
    esp = esp_with(tmp_path, (".appliance-b+1.conf.tmp", text), ("auto-b.conf", text),
                   ("appliance-b+1.conf.tmp", text), ("appliance-a.CONF", text))
    assert [e.file_name for e in read_entries(esp)] == ["appliance-a.CONF"]


def test_writing_a_slots_entry_replaces_its_older_files(tmp_path: Path) -> None:
    esp = esp_with(tmp_path, ("appliance-b+0-1.conf", render_entry("b", "2", PRIMARY, OPTIONS)),
                   ("appliance-a.conf", render_entry("a", "1", FALLBACK, OPTIONS)))
    write_entry(esp, "b", render_entry("b", "3", PRIMARY, OPTIONS), tries=1)
    assert sorted(p.name for p in entries_dir(esp).iterdir()) == [
        "appliance-a.conf", "appliance-b+1.conf"]
