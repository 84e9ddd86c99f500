"""glibc malloc tuning for training processes: each case runs in a fresh Python process (a per-process setting)."""

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")

# A step that allocates four 1 MiB buffers, touches them and frees them; the minor page faults of 20 such steps.
PROBE = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from hf_capacity.cpu_allocator import malloc_tuning_reason, tune_malloc_for_training

    applied = tune_malloc_for_training() if sys.argv[1] == "tune" else False
    def step():
        buffers = [np.ones(1 << 18, dtype=np.float32) for _ in range(4)]
        del buffers
    step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        step()
    print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, malloc_tuning_reason(), sep="|")
""")


def clean_env() -> dict[str, str]:
    """This process's environment without any malloc setting of the user's or the opt-out."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("MALLOC_") and k not in ("HF_CAPACITY_MALLOC_TUNING", "GLIBC_TUNABLES")}


def probe(mode: str, **env: str) -> tuple[bool, int, str]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], env={**clean_env(), **env}, capture_output=True,
                         text=True, check=True).stdout.strip().splitlines()[-1]
    applied, faults, reason = out.split("|")
    return applied == "True", int(faults), reason


def test_a_tuned_process_reuses_its_freed_buffers_instead_of_faulting_them_in_again():
    _, default_faults, _ = probe("leave")
    applied, tuned_faults, reason = probe("tune")
    assert applied and reason == "None"
    assert default_faults > 4000  # glibc trims the freed megabytes back to the OS every step: ~1,000 pages a step
    assert tuned_faults < default_faults / 10


@pytest.mark.parametrize("env, why", [
    ({"HF_CAPACITY_MALLOC_TUNING": "0"}, "HF_CAPACITY_MALLOC_TUNING=0"),
    ({"MALLOC_TRIM_THRESHOLD_": "1000000"}, "the environment sets MALLOC_TRIM_THRESHOLD_"),
    ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1000000"}, "the environment sets GLIBC_TUNABLES"),
])
def test_an_opt_out_or_the_users_own_malloc_settings_are_left_alone(env, why):
    applied, _, reason = probe("tune", **env)
    assert not applied
    assert reason == why


def test_large_buffers_in_worker_threads_still_allocate_when_tuned():
    """Buffers above the 32 MiB threshold, in threads with arenas of their own, allocate and free as before."""
    code = textwrap.dedent("""
        import threading
        import torch
        from hf_capacity.cpu_allocator import tune_malloc_for_training

        assert tune_malloc_for_training()
        sums = {}
        def work(i):
            sums[i] = float(torch.ones(20_000_000).sum())  # 80 MB, allocated and freed in a worker thread
        threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(sorted(sums.values()))
    """)
    out = subprocess.run([sys.executable, "-c", code], env=clean_env(), capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == str([20_000_000.0] * 3)
