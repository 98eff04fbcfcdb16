"""cgroup limits, the pure parts and the tree layout: v1 (hybrid hosts) next to v2 —
``/proc/self/cgroup`` per controller, ``/proc/self/mountinfo``, the limit files of each
version and their order, OOM counts; detection and the files written, on a fake tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from tako_server.cgroups import (
    MEMORY_V1,
    MEMSW,
    AppCgroup,
    CgroupTree,
    CgroupV1,
    CgroupV2,
    Limits,
    cap_cpu_quota,
    limit_files_v1,
    memory_v1_order,
    oom_kills,
    own_cgroups_v1,
    v1_dir,
    v1_mounts,
)

HYBRID_CGROUP = """10:hugetlb:/
9:name=systemd:/system.slice/tako-server.service
8:pids:/system.slice/tako-server.service
4:memory:/system.slice/tako-server.service
3:cpu,cpuacct:/system.slice/tako-server.service
0::/system.slice/tako-server.service
"""

HYBRID_MOUNTS = """31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
"""

SERVICE = "/system.slice/tako-server.service"


@pytest.mark.parametrize(
    ("text", "paths"),
    [
        (
            HYBRID_CGROUP,
            {
                "hugetlb": "/",
                "pids": SERVICE,
                "memory": SERVICE,
                "cpu": SERVICE,
                "cpuacct": SERVICE,
            },
        ),
        ("4:memory:/process_api/1\n1:cpu:/\n0::/\n", {"memory": "/process_api/1", "cpu": "/"}),
        ("0::/system.slice/x\n", {}),  # pure cgroup v2
        ("", {}),
    ],
)
def test_the_daemons_cgroup_v1_path_per_controller(text: str, paths: dict[str, str]) -> None:
    assert own_cgroups_v1(text) == paths


def test_v1_hierarchies_are_found_in_mountinfo_with_their_root() -> None:
    assert v1_mounts(HYBRID_MOUNTS) == {
        "cpu": (Path("/sys/fs/cgroup/cpu,cpuacct"), "/"),
        "memory": (Path("/sys/fs/cgroup/memory"), "/"),
        "pids": (Path("/sys/fs/cgroup/pids"), "/"),
    }
    container = "50 40 0:32 /docker/abc /sys/fs/cgroup/memory ro - cgroup cgroup ro,memory\n"
    assert v1_mounts(container) == {"memory": (Path("/sys/fs/cgroup/memory"), "/docker/abc")}
    pure_v2 = "41 31 0:38 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n"
    assert v1_mounts(pure_v2) == {}


@pytest.mark.parametrize(
    ("mount_root", "path", "expected"),
    [
        ("/", SERVICE, "/m/system.slice/tako-server.service"),
        ("/", "/", "/m"),
        ("/docker/abc", "/docker/abc", "/m"),
        ("/docker/abc", "/docker/abc/sub", "/m/sub"),
        ("/docker/abc", "/docker/abcd", None),  # outside the mount
        ("/docker/abc", "/", None),
    ],
)
def test_a_cgroup_path_within_a_v1_mount(mount_root: str, path: str, expected: str | None) -> None:
    found = v1_dir(Path("/m"), mount_root, path)
    assert (str(found) if found else None) == expected


def test_limits_become_cgroup_v1_files_per_controller() -> None:
    assert limit_files_v1(Limits(memory_mb=64, cpu_percent=150, pids_max=100)) == {
        "memory": {MEMORY_V1: "67108864", MEMSW: "67108864", "memory.oom_control": "0"},
        "cpu": {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "150000"},
        "pids": {"pids.max": "100"},
    }


@pytest.mark.parametrize(
    ("current", "new", "order"),
    [
        (2**63 - 4096, 64 << 20, (MEMORY_V1, MEMSW)),  # a new cgroup: lower
        (64 << 20, 128 << 20, (MEMSW, MEMORY_V1)),  # raised: memsw first
        (64 << 20, 64 << 20, (MEMORY_V1, MEMSW)),
    ],
)
def test_v1_memory_files_are_written_in_an_order_the_kernel_accepts(
    current: int, new: int, order: tuple[str, str]
) -> None:
    assert memory_v1_order(current, new) == order


@pytest.mark.parametrize(
    ("ancestors", "quota"),
    [
        ([], 200_000),
        ([(-1, 100_000), (-1, 100_000)], 200_000),  # no quota above
        ([(-1, 100_000), (100_000, 100_000)], 100_000),  # the unit's CPUQuota=100%
        ([(50_000, 200_000)], 25_000),  # 25 % in another period
        ([(300_000, 100_000)], 200_000),  # more above: the app's own
    ],
)
def test_a_v1_cpu_quota_is_capped_at_the_ancestors(
    ancestors: list[tuple[int, int]], quota: int
) -> None:
    assert cap_cpu_quota(200_000, ancestors) == quota


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n", 3),  # v1 memory.oom_control
        ("low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n", 2),  # v2
        ("oom_kill_disable 0\nunder_oom 0\n", 0),  # v1 before 4.13: no count
        ("", 0),
    ],
)
def test_oom_kills_of_either_version(text: str, count: int) -> None:
    assert oom_kills(text) == count


def fake_hybrid(tmp_path: Path, cgroup: str = HYBRID_CGROUP) -> tuple[Path, Path]:
    """A hybrid layout in files: a tmpfs root (no cgroup.controllers) and three v1 mounts."""
    root, proc = tmp_path / "cgroup", tmp_path / "proc"
    proc.mkdir()
    (proc / "cgroup").write_text(cgroup)
    (proc / "mountinfo").write_text(HYBRID_MOUNTS.replace("/sys/fs/cgroup", str(root)))
    for name in ("cpu,cpuacct", "memory", "pids"):
        (root / name / SERVICE.lstrip("/")).mkdir(parents=True)
    return root, proc


def test_a_hybrid_host_gets_v1_apps_under_the_daemons_cgroup_in_each_hierarchy(
    tmp_path: Path,
) -> None:
    root, proc = fake_hybrid(tmp_path)
    tree = CgroupTree.detect(root, proc)
    assert isinstance(tree, CgroupV1)
    service = SERVICE.lstrip("/")
    bases = [root / "memory" / service, root / "cpu,cpuacct" / service, root / "pids" / service]
    assert tree.bases == tuple(bases)
    assert all((base / "apps").is_dir() for base in bases)

    app = tree.app_dir("web", "production", Limits(64, 50, 100))
    dirs = tuple(base / "apps" / "web-production" for base in bases)
    assert app == AppCgroup(dirs, dirs[0] / "memory.oom_control")
    assert (dirs[0] / MEMORY_V1).read_text() == str(64 << 20)
    assert not (dirs[0] / MEMSW).exists()  # the kernel's file only: no swap accounting
    assert (dirs[1] / "cpu.cfs_quota_us").read_text() == "50000"
    assert (dirs[2] / "pids.max").read_text() == "100"

    for path in dirs:  # what the kernel's files would be: the directory is empty then
        for entry in path.iterdir():
            entry.unlink()
    tree.remove_app("web", "production")
    assert not any(path.exists() for path in dirs)


def test_memsw_follows_the_memory_limit_when_the_kernel_offers_it(tmp_path: Path) -> None:
    root, proc = fake_hybrid(tmp_path)
    tree = CgroupTree.detect(root, proc)
    assert tree is not None
    memory = tree.bases[0] / "apps" / "web-production"
    memory.mkdir()
    (memory / MEMORY_V1).write_text(str(32 << 20))
    (memory / MEMSW).write_text(str(32 << 20))
    tree.app_dir("web", "production", Limits(64, 100, 100))
    assert (memory / MEMSW).read_text() == (memory / MEMORY_V1).read_text() == str(64 << 20)


@pytest.mark.parametrize(
    "cgroup",
    [
        HYBRID_CGROUP.replace("8:pids:/system.slice/tako-server.service\n", ""),  # no pids
        "0::/system.slice/tako-server.service\n",  # v1 mounts but the process is in none
    ],
)
def test_without_the_three_v1_hierarchies_there_are_no_limits(tmp_path: Path, cgroup: str) -> None:
    root, proc = fake_hybrid(tmp_path, cgroup)
    assert CgroupTree.detect(root, proc) is None


def test_v2_is_preferred_when_the_root_offers_the_three_controllers(tmp_path: Path) -> None:
    root, proc = fake_hybrid(tmp_path)
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    base = root / SERVICE.lstrip("/")
    base.mkdir(parents=True)
    (base / "cgroup.procs").write_text("")
    tree = CgroupTree.detect(root, proc)
    assert isinstance(tree, CgroupV2) and tree.base == base
    app = tree.app_dir("web", "production", Limits(64, 100, 100))
    assert app.dirs == (base / "apps" / "web-production",)
    assert app.oom_file == base / "apps" / "web-production" / "memory.events"
    assert (app.dirs[0] / "memory.max").read_text() == str(64 << 20)


def test_a_v1_app_gets_no_more_cpu_than_the_daemons_cgroup_allows(tmp_path: Path) -> None:
    root, proc = fake_hybrid(tmp_path)
    cpu = root / "cpu,cpuacct" / SERVICE.lstrip("/")
    (cpu / "cpu.cfs_quota_us").write_text("100000\n")  # the unit's CPUQuota=100%
    (cpu / "cpu.cfs_period_us").write_text("100000\n")
    tree = CgroupTree.detect(root, proc)
    assert tree is not None
    (cpu / "apps" / "cpu.cfs_quota_us").write_text("-1\n")  # as the kernel makes it
    (cpu / "apps" / "cpu.cfs_period_us").write_text("100000\n")
    tree.app_dir("web", "production", Limits(64, 200, 100))
    assert (cpu / "apps" / "web-production" / "cpu.cfs_quota_us").read_text() == "100000"
