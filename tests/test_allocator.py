"""rsam.allocator: the rsam command re-executes itself on jemalloc where it is installed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from rsam import allocator

# prints its pid before and after the relaunch, and whether jemalloc's own entry point (mallctl) is in the process:
# an independent sign of the allocator, not the /proc/self/maps check the module uses
PROBE = """
import ctypes, os, sys
print("before", os.getpid(), flush=True)
from rsam.allocator import relaunch_on_jemalloc
relaunch_on_jemalloc()
print("after", os.getpid(), hasattr(ctypes.CDLL(None), "mallctl"), os.environ.get("MALLOC_CONF"), flush=True)
"""


def run_probe(setting: str, **env) -> list[list[str]]:
    environment = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF", allocator._RELAUNCHED)}
    environment.update({allocator.SETTING: setting, **env})
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=environment, timeout=60)
    assert done.returncode == 0, done.stderr
    return [line.split() for line in done.stdout.splitlines()]


needs_jemalloc = pytest.mark.skipif(allocator.find_jemalloc() is None, reason="no libjemalloc installed")


@needs_jemalloc
def test_auto_relaunches_the_same_process_on_jemalloc_once():
    lines = run_probe("auto")
    assert [line[0] for line in lines] == ["before", "before", "after"]  # the script ran again, after one exec
    assert len({line[1] for line in lines}) == 1  # same pid: exec, not a child process
    assert lines[-1][2] == "True"  # jemalloc's mallctl resolves in the process
    assert lines[-1][3] == allocator.JEMALLOC_CONF


@needs_jemalloc
def test_a_malloc_conf_of_the_user_is_kept():
    assert run_probe("jemalloc", MALLOC_CONF="narenas:2")[-1][3] == "narenas:2"


def test_system_never_relaunches():
    lines = run_probe("system")
    assert [line[0] for line in lines] == ["before", "after"]
    assert lines[-1][2] == "False"


def test_a_library_that_cannot_be_preloaded_runs_on_the_system_allocator_after_one_try(tmp_path):
    not_a_library = tmp_path / "libjemalloc.so.2"
    not_a_library.write_text("not an ELF file\n")
    lines = run_probe(str(not_a_library))
    assert [line[0] for line in lines] == ["before", "before", "after"]  # tried once, then no loop
    assert lines[-1][2] == "False"


def test_the_setting_is_checked(monkeypatch):
    assert allocator.wanted_library("system") is None
    with pytest.raises(ValueError, match="RSAM_MALLOC='tcmalloc'"):
        allocator.wanted_library("tcmalloc")
    monkeypatch.setattr(allocator, "find_jemalloc", lambda: None)
    assert allocator.wanted_library("auto") is None
    with pytest.raises(FileNotFoundError, match="apt install libjemalloc2"):
        allocator.wanted_library("jemalloc")


def test_the_rsam_command_names_a_bad_setting_in_one_line():
    environment = {**os.environ, allocator.SETTING: "bogus"}
    done = subprocess.run(
        [sys.executable, "-m", "rsam.cli.main", "--version"], capture_output=True, text=True, env=environment
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "rsam: error: RSAM_MALLOC='bogus': expected auto, jemalloc, system or the path of a libjemalloc.so"
    ]


# frees a 512 MiB tensor after set_decay(ms) and prints the RSS drop in MiB (statm: resident pages)
DECAY_PROBE = """
import sys
from rsam.allocator import relaunch_on_jemalloc, set_decay
relaunch_on_jemalloc()
import torch
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
changed = set_decay(int(sys.argv[1]))
x = torch.ones(512 * 2**20 // 4)
before = rss()
del x
print(changed, round(before - rss()), flush=True)
"""


def run_decay_probe(ms: int, setting: str = "jemalloc", **env) -> tuple[str, int]:
    environment = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF", allocator._RELAUNCHED)}
    environment.update({allocator.SETTING: setting, **env})
    done = subprocess.run(
        [sys.executable, "-c", DECAY_PROBE, str(ms)], capture_output=True, text=True, env=environment, timeout=120
    )
    assert done.returncode == 0, done.stderr
    changed, freed = done.stdout.split()
    return changed, int(freed)


@needs_jemalloc
def test_set_decay_returns_freed_pages_to_the_os_only_when_asked():
    assert run_decay_probe(-1) == ("True", 0)  # rsam's default: the freed pages stay resident for reuse
    changed, freed = run_decay_probe(0)
    assert changed == "True" and freed >= 500  # the 512 MiB left the process's RSS at once


@needs_jemalloc
def test_set_decay_leaves_a_users_malloc_conf_and_the_system_allocator_alone():
    assert run_decay_probe(0, MALLOC_CONF="narenas:2")[0] == "False"
    assert run_decay_probe(0, setting="system")[0] == "False"
