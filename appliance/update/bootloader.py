"""systemd-boot Type #1 entries: parse, render, order, bless, and a simulated boot.

The updater never sets EFI variables or a ``default``: what boots is the first entry in
systemd-boot's own order, so the order is the whole contract and is mirrored here exactly as
systemd 252 computes it (``config_entry_compare``): entries with no tries left last; entries
with a ``sort-key`` before those without; then sort-key ascending, machine-id, ``version``
descending and the file name descending (both by systemd's version compare); then more tries
left, then fewer tries done. The slot to boot next has sort-key ``appliance-1-primary``, the
other ``appliance-2-fallback``. A trial entry carries a boot counter in its name
(``appliance-b+1.conf``); each boot attempt renames it (``appliance-b+0-1.conf``); at zero tries
left it sorts last and the other slot boots: that is the rollback.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, replace
from pathlib import Path

from appliance.files import fsync_dir, remove_durable, rename_durable, write_atomic
from appliance.update.versions import cmp, strverscmp

PRIMARY = "appliance-1-primary"
FALLBACK = "appliance-2-fallback"
INT_MAX = 2**31 - 1
_OURS = re.compile(r"^appliance-([ab])(\+\d+(-\d+)?)?\.conf$")


def entries_dir(esp: Path) -> Path:
    return esp / "loader" / "entries"


def kernel_dir(esp: Path, slot: str) -> Path:
    return esp / "appliance" / slot


def parse_counter(file_name: str) -> tuple[str, int, int] | None:
    """``(prefix, left, done)`` of a ``NAME+LEFT[-DONE].conf`` name, or None without a
    counter; like systemd-boot, the last ``+`` counts and nothing may follow but ``.conf``."""
    plus = file_name.rfind("+")
    if plus < 0:
        return None
    match = re.match(r"(\d+)(?:-(\d+))?\.conf$", file_name[plus + 1:])
    if not match:
        return None
    left, done = int(match.group(1)), int(match.group(2) or 0)
    if left > INT_MAX or done > INT_MAX:
        return None
    return file_name[:plus], left, done


@dataclass(frozen=True)
class Entry:
    file_name: str
    title: str | None = None
    version: str | None = None
    sort_key: str | None = None
    machine_id: str | None = None
    linux: str | None = None
    initrd: tuple[str, ...] = ()
    options: str | None = None

    @property
    def id(self) -> str:
        return self.file_name.lower()

    @property
    def counter(self) -> tuple[str, int, int] | None:
        return parse_counter(self.file_name)

    @property
    def tries_left(self) -> int | None:
        counter = self.counter
        return None if counter is None else counter[1]

    @property
    def tries_done(self) -> int | None:
        counter = self.counter
        return None if counter is None else counter[2]

    @property
    def state(self) -> str:
        """good (no counter: blessed), trial (tries left) or bad (none left)."""
        left = self.tries_left
        return "good" if left is None else "trial" if left > 0 else "bad"

    @property
    def slot(self) -> str | None:
        """a or b for the updater's own entries, None for anything else."""
        match = _OURS.match(self.file_name)
        return match.group(1) if match else None

    @property
    def blessed_name(self) -> str:
        counter = self.counter
        return self.file_name if counter is None else counter[0] + ".conf"

    @property
    def next_name(self) -> str:
        """The name systemd-boot gives the file when it boots it."""
        counter = self.counter
        if counter is None:
            return self.file_name
        prefix, left, done = counter
        return f"{prefix}+{max(left - 1, 0)}-{min(done + 1, INT_MAX)}.conf"


def parse_entry(file_name: str, text: str) -> Entry:
    """An entry file as systemd-boot reads it: ``key value`` lines, ``#`` comments, later
    keys replace earlier ones, ``initrd`` adds, ``options`` appends."""
    fields: dict[str, str] = {}
    initrd: list[str] = []
    options: list[str] = []
    for raw in text.splitlines():
        line = raw.strip(" \t")
        if not line or line.startswith("#"):
            continue
        parts = re.split(r"[ \t]+", line, maxsplit=1)
        if len(parts) < 2:
            continue
        key, value = parts
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        if key == "initrd":
            initrd.append(value)
        elif key == "options":
            options.append(value)
        elif key in ("title", "version", "sort-key", "machine-id", "linux"):
            fields[key] = value
    return Entry(file_name, fields.get("title"), fields.get("version"), fields.get("sort-key"),
                 fields.get("machine-id"), fields.get("linux"), tuple(initrd),
                 " ".join(options) if options else None)


def entry_name(slot: str, tries: int | None = None) -> str:
    return f"appliance-{slot}.conf" if tries is None else f"appliance-{slot}+{tries}.conf"


def render_entry(slot: str, version: str, sort_key: str, kernel_options: str) -> str:
    """A slot's entry; ``kernel_options`` is the ``update.kernel_options`` template."""
    return (f"title Edge appliance {version} (slot {slot})\n"
            f"version {version}\n"
            f"sort-key {sort_key}\n"
            f"linux /appliance/{slot}/vmlinuz\n"
            f"initrd /appliance/{slot}/initrd.img\n"
            f"options {kernel_options.format(slot=slot)}\n")


def initial_entry(version: str, kernel_options: str | None = None) -> tuple[str, str]:
    """Slot a's entry as the image build ships it: good (no counter) and primary.
    ``kernel_options`` defaults to the ``update.kernel_options`` default."""
    if kernel_options is None:
        from appliance.config import UpdateSettings

        kernel_options = UpdateSettings().kernel_options
    return entry_name("a"), render_entry("a", version, PRIMARY, kernel_options)


def _strcmp_ptr(a: str | None, b: str | None) -> int:
    if a is None or b is None:
        return cmp(a is not None, b is not None)
    return cmp(a, b)


def compare(a: Entry, b: Entry) -> int:
    """systemd 252's ``config_entry_compare``: negative when ``a`` comes first."""
    r = cmp(a.tries_left == 0, b.tries_left == 0)
    if r:
        return r
    r = cmp(a.sort_key is None, b.sort_key is None)
    if r:
        return r
    if a.sort_key is not None and b.sort_key is not None:
        r = (_strcmp_ptr(a.sort_key, b.sort_key) or _strcmp_ptr(a.machine_id, b.machine_id)
             or -strverscmp(a.version, b.version))
        if r:
            return r
    r = -strverscmp(a.id, b.id)
    if r:
        return r
    if a.tries_left is None or b.tries_left is None or a.tries_done is None \
            or b.tries_done is None:  # a counter has both parts, or neither
        return 0
    return -cmp(a.tries_left, b.tries_left) or cmp(a.tries_done, b.tries_done)


def boot_order(entries: list[Entry]) -> list[Entry]:
    return sorted(entries, key=functools.cmp_to_key(compare))


def next_boot(entries: list[Entry]) -> Entry | None:
    """What systemd-boot boots with no default and no EFI variables: the first in order."""
    ordered = boot_order(entries)
    return ordered[0] if ordered else None


def _loadable(esp: Path, entry: Entry) -> bool:
    # systemd-boot drops an entry whose kernel it cannot open.
    return entry.linux is not None and (esp / entry.linux.lstrip("/")).is_file()


def read_entries(esp: Path, loadable_only: bool = True) -> list[Entry]:
    """The entries systemd-boot would list: ``*.conf`` (any case), no dot files, no
    ``auto-*``, and (by default) only those whose kernel exists on the ESP."""
    folder = entries_dir(esp)
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.iterdir()):
        name = path.name
        if (name.startswith(".") or name.startswith("auto-") or not path.is_file()
                or not name.lower().endswith(".conf")):
            continue
        entry = parse_entry(name, path.read_text(errors="replace"))
        if not loadable_only or _loadable(esp, entry):
            found.append(entry)
    return found


def slot_entries(esp: Path, slot: str) -> list[Entry]:
    """The updater's entries for one slot, whether or not their kernel is there."""
    return [e for e in read_entries(esp, loadable_only=False) if e.slot == slot]


def write_entry(esp: Path, slot: str, text: str, tries: int | None = None) -> Path:
    """Write a slot's entry atomically, then remove the slot's other entry files: the new
    one is in place before an old one goes, so the slot is never without an entry."""
    path = entries_dir(esp) / entry_name(slot, tries)
    write_atomic(path, text.encode())
    stale = [entries_dir(esp) / e.file_name for e in slot_entries(esp, slot)
             if e.file_name != path.name]
    remove_durable(stale)
    return path


def remove_slot_entries(esp: Path, slot: str) -> None:
    remove_durable([entries_dir(esp) / e.file_name for e in slot_entries(esp, slot)])


def bless(esp: Path, entry: Entry) -> Entry:
    """What systemd-bless-boot does after a good boot: drop the counter from the name."""
    if entry.counter is None:
        return entry
    folder = entries_dir(esp)
    rename_durable(folder / entry.file_name, folder / entry.blessed_name)
    return replace(entry, file_name=entry.blessed_name)


def simulate_boot(esp: Path, cmdline_file: Path | None = None) -> Entry | None:
    """Do what systemd-boot does at power-on: pick the first entry, count the attempt by
    renaming it, and (for tests) hand its options to ``cmdline_file`` as /proc/cmdline."""
    entry = next_boot(read_entries(esp))
    if entry is None:
        return None
    if entry.counter is not None:
        folder = entries_dir(esp)
        (folder / entry.file_name).rename(folder / entry.next_name)
        fsync_dir(folder)
        entry = replace(entry, file_name=entry.next_name)
    if cmdline_file is not None:
        cmdline_file.write_text(f"BOOT_IMAGE={entry.linux} {entry.options or ''}\n")
    return entry
