"""Training across machines is Accelerate's job: two "machines" on 127.0.0.1, one process each, end with the weights of
one process with two accumulation micro-batches over the same global batches."""

import json
import os
import signal
import subprocess
import sys

from test_training import TINY_RUN, free_port, max_weight_diff, train_cli, write_audiofolder


def launch_machines(argv_of_rank, timeout: float = 300) -> list[subprocess.CompletedProcess]:
    """Starts one `accelerate launch` per machine rank at once (each in its own process group, one thread, CPU/gloo)
    and waits for all; on a timeout every group is killed, so no rank outlives the test."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "ACCELERATE_USE_CPU": "true"}
    processes = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  start_new_session=True) for argv in argv_of_rank]
    results = []
    try:
        for argv, process in zip(argv_of_rank, processes):
            stdout, stderr = process.communicate(timeout=timeout)
            results.append(subprocess.CompletedProcess(argv, process.returncode, stdout, stderr))
    except subprocess.TimeoutExpired:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
        logs = [p.communicate()[1][-3000:] for p in processes]
        raise AssertionError("multi-machine launch timed out:\n" + "\n---\n".join(logs)) from None
    for result in results:
        assert result.returncode == 0, (f"{' '.join(result.args)} failed:\n{result.stdout[-2000:]}\n"
                                        f"{result.stderr[-5000:]}")
    return results


def test_two_machines_match_one_process_with_two_micro_batches(tmp_path):
    data = write_audiofolder(tmp_path / "tones", 30)
    common = ["--dataset", str(data), "--epochs", "2", "--eval-split", "none", "--freq-mask", "24", *TINY_RUN]
    port = free_port()

    def machine(rank: int) -> list[str]:
        return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "2",
                "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
                "--num_processes", "2",
                "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "elasticast.training", *common,
                "--output-dir", str(tmp_path / "two_machines")]

    launch_machines([machine(0), machine(1)])
    train_cli([*common, "--output-dir", str(tmp_path / "single"), "--gradient-accumulation-steps", "2"])

    multi = json.loads((tmp_path / "two_machines" / "metrics.json").read_text())["summary"]
    single = json.loads((tmp_path / "single" / "metrics.json").read_text())["summary"]
    assert (multi["processes"], single["processes"]) == (2, 1)
    assert multi["max_weight_diff_across_processes"] == 0.0  # the machines hold the same weights
    assert multi["steps"] == single["steps"] and multi["clips"] == single["clips"] == 60
    assert max_weight_diff(tmp_path / "two_machines", tmp_path / "single") <= 1e-6
