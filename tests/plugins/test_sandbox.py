"""The confinement as data: what a plugin's command line grants and limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.plugins.sandbox import (
    SANDBOX_PROCESSES,
    Confinement,
    Limits,
    RunAs,
    processes_of,
    run_as,
    sandbox_argv,
)

LIMITS = Limits(memory_bytes=256 << 20, processes=16, cpu_s=60)


def confinement(data_dir: Path | None = None) -> Confinement:
    return Confinement("bwrap", Path("/usr/bin/python3"), Path("/p/installed/x"), "main.py",
                       Path("/p/sdk"), data_dir, LIMITS)


def test_the_limits_come_first_so_every_process_of_the_plugin_inherits_them() -> None:
    argv = sandbox_argv(confinement())
    assert argv[:argv.index("--")] == [
        "prlimit", f"--as={256 << 20}", f"--nproc={16 + SANDBOX_PROCESSES}", "--cpu=60",
        "--core=0", "--nofile=256", f"--fsize={64 << 20}"]


def test_the_process_limit_adds_what_the_user_already_runs() -> None:
    assert f"--nproc={16 + SANDBOX_PROCESSES + 40}" in sandbox_argv(confinement(), 40)


def test_every_namespace_is_unshared_so_the_plugin_has_no_network() -> None:
    argv = sandbox_argv(confinement())
    assert argv[argv.index("--") + 1:][:3] == ["bwrap", "--unshare-all", "--die-with-parent"]
    assert "--share-net" not in argv


def test_the_plugin_folder_and_sdk_are_read_only_and_usr_is_the_only_system_folder() -> None:
    argv = sandbox_argv(confinement())
    binds = [tuple(argv[i:i + 3]) for i, a in enumerate(argv) if a in ("--ro-bind", "--bind")]
    assert binds == [("--ro-bind", "/usr", "/usr"), ("--ro-bind", "/p/installed/x", "/plugin"),
                     ("--ro-bind", "/p/sdk", "/sdk")]


def test_the_data_folder_is_writable_only_when_granted() -> None:
    argv = sandbox_argv(confinement(Path("/p/data/x")))
    assert ("--bind", "/p/data/x", "/data") in {tuple(argv[i:i + 3]) for i in range(len(argv))}
    assert argv[argv.index("HOME") + 1] == "/data"


def test_the_environment_is_cleared_and_the_entry_runs_from_the_plugin_folder() -> None:
    argv = sandbox_argv(confinement())
    assert "--clearenv" in argv and argv[-2:] == ["/usr/bin/python3", "/plugin/main.py"]


def test_an_unprivileged_gateway_runs_plugins_as_itself() -> None:
    assert run_as("nobody", euid=1000).uid is None


def test_a_root_gateway_runs_plugins_as_the_configured_user() -> None:
    assert run_as("nobody", euid=0).uid == 65534


def test_root_is_refused_as_the_plugins_user() -> None:
    with pytest.raises(ValueError, match="must not be root"):
        run_as("root", euid=0)


def test_an_unknown_plugins_user_is_named() -> None:
    with pytest.raises(ValueError, match="no-such-user"):
        run_as("no-such-user", euid=0)


def test_the_process_count_sums_the_threads_of_the_users_processes(tmp_path: Path) -> None:
    for pid, uid, threads in ((10, 7, 3), (11, 7, 1), (12, 8, 5)):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "status").write_text(
            f"Name:\tx\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\nThreads:\t{threads}\n")
    assert processes_of(7, tmp_path) == 4


def test_a_root_gateway_drops_to_the_plugins_user_before_anything_else_runs() -> None:
    argv = sandbox_argv(confinement(), who=RunAs(65534, 65534))
    assert argv[:5] == ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
    assert argv[5] == "prlimit"


def test_an_unprivileged_gateway_starts_the_limits_directly() -> None:
    assert sandbox_argv(confinement(), who=RunAs(None, None))[0] == "prlimit"
