"""A run killed part-way and started again resumes from its newest checkpoint and ends where an unbroken run ends."""

import json
import os
import signal
import subprocess
import sys
import time

TRAIN = ["-m", "hf_capacity.cli", "train", "--dataset", "bioS", "--N", "30", "--model", "gpt2-1-1", "--head-dim",
         "16", "--exposures", "50", "--context-length", "128", "--batch-size", "4", "--vocab-size", "400",
         "--lr", "3e-3", "--warmup-steps", "10", "--eval-steps", "30", "--save-steps", "15", "--quiet"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}  # same threads: same summation order


def train(output_dir, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *TRAIN, "-o", str(output_dir)], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kwargs)


def test_a_killed_run_resumes_from_its_checkpoint_and_ends_with_the_same_bits(tmp_path):
    unbroken = train(tmp_path / "unbroken")
    killed = train(tmp_path / "killed")
    deadline = time.monotonic() + 120
    while not (tmp_path / "killed" / "checkpoint-45" / "trainer_state.json").is_file():
        assert killed.poll() is None and time.monotonic() < deadline, killed.communicate()[0][-3000:]
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)  # as a crash or the end of a session would
    killed.wait()
    assert not (tmp_path / "killed" / "results.json").exists()  # it really stopped part-way
    resumed = train(tmp_path / "killed")
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out[-3000:]
    unbroken_out, _ = unbroken.communicate(timeout=300)
    assert unbroken.returncode == 0, unbroken_out[-3000:]
    assert f"resuming from {tmp_path / 'killed' / 'checkpoint-'}" in out
    # the resumed process did not train the steps before its checkpoint again: it skipped their measurements
    assert out.count("'knowledge_bits'") < unbroken_out.count("'knowledge_bits'")

    a = json.loads((tmp_path / "unbroken" / "results.json").read_text())
    b = json.loads((tmp_path / "killed" / "results.json").read_text())
    assert [h["step"] for h in b["history"]] == [h["step"] for h in a["history"]]  # the curve kept its early points
    # same machine, same threads, same data order, restored optimizer, scheduler and RNG states: the resumed
    # model computes bitwise the same losses as the unbroken one, so the tolerance is zero
    assert (b["p1"], b["p2"], b["bits"]) == (a["p1"], a["p2"], a["bits"])
    assert b["history"] == a["history"]
