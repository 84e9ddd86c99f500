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


def test_a_memorization_run_stopped_part_way_resumes_with_its_curve_and_ends_with_the_same_bits(tmp_path,
                                                                                                 monkeypatch):
    """A crash after checkpoint-20 (at step 27, a measurement at step 25 made and lost) and the same run started
    again: it resumes from the checkpoint with the curve measured up to it, and ends where an unbroken run ends."""
    import pytest

    from hf_capacity.callbacks import MemorizationCallback
    from hf_capacity.memorization import MemorizationRunConfig, train_memorization

    def config(folder):
        return MemorizationRunConfig(output_dir=str(tmp_path / folder), n_sequences=12, length=8, vocab_size=64,
                                     model="gpt2-1-1", head_dim=16, epochs=20, batch_size=6, learning_rate=1e-2,
                                     warmup_steps=4, eval_steps=5, save_steps=10, progress=False)

    unbroken = train_memorization(config("unbroken"))  # 40 steps, 2 a pass
    measure = MemorizationCallback.on_step_end

    def crash_at_27(self, args, state, control, **kwargs):
        measure(self, args, state, control, **kwargs)
        if state.global_step == 27:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(MemorizationCallback, "on_step_end", crash_at_27)
    with pytest.raises(KeyboardInterrupt):
        train_memorization(config("killed"))
    monkeypatch.undo()
    killed = tmp_path / "killed"
    assert sorted(p.name for p in killed.glob("checkpoint-*")) == ["checkpoint-10", "checkpoint-20"]
    assert (killed / "memorization_run.json").is_file() and not (killed / "memorization.json").exists()

    measured = []
    original = MemorizationCallback._metrics

    def counted(self, model, step):
        measured.append(step)
        return original(self, model, step)

    monkeypatch.setattr(MemorizationCallback, "_metrics", counted)
    resumed = train_memorization(config("killed"))
    assert measured == [25, 30, 35, 40]  # it went on from checkpoint-20: the steps before were not trained again
    steps = [h["step"] for h in resumed["history"]]
    assert steps == [h["step"] for h in unbroken["history"]] == list(range(5, 41, 5))  # complete, each step once
    for a, b in zip(resumed["history"], unbroken["history"]):
        assert a == pytest.approx(b, rel=1e-6)
    assert resumed["memorized_bits"] == pytest.approx(unbroken["memorized_bits"], rel=1e-6)
    assert resumed["steps_trained"] == 40 and not list(killed.glob("checkpoint-*"))  # finished: checkpoints gone
    assert json.loads((killed / "memorization.json").read_text())["history"] == resumed["history"]
