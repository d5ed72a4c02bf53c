"""The benchmark entry point (python -m benchmarks) runs end to end and writes its JSON.

Only the schema is checked: speed goals are the benchmark's output, never a test's assertion.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--model", "conformer_micro_patch16", "--input-size", "64", "--threads", "1",
         "--warmup", "0", "--repeats", "1"]
ALL_CASES = {"forward", "fwd_bwd", "ours_full", "rollout_pass", "pgc_cnn", "pgc_transformer",
             "pgc_per_tap", "captum_lgc", "lrp", "lrp_pass"}


def bench(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmarks", *args, "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


def only_json(out: Path) -> dict:
    files = list(out.glob("explain_speed_*.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


def test_quick_run_prints_the_table_and_writes_the_json(tmp_path):
    proc = bench(tmp_path, "--quick", *SMALL, "--batch", "1,2", "--pgc-per-tap")
    assert proc.returncode == 0, proc.stderr
    data = only_json(tmp_path)
    assert data["benchmark"] == "explain_speed" and data["format"] == 1
    cfg = data["config"]
    assert cfg["model"] == "conformer_micro_patch16" and cfg["device"] == "cpu"
    assert cfg["batches"] == [1, 2] and cfg["input_size"] == [64, 64]
    assert cfg["dtype"] == "fp32" and set(cfg["cases"]) == ALL_CASES
    machine = data["machine"]
    assert machine["cpu"] and machine["logical_cores"] >= 1 and machine["torch_threads"] == 1
    assert machine["torch"] and machine["gpu"] is None
    assert any("pgc_set" in note for note in data["notes"])

    assert [run["batch"] for run in data["runs"]] == [1, 2]
    for run in data["runs"]:
        assert set(run["cases"]) == ALL_CASES and run["skipped"] == {}
        for name, case in run["cases"].items():
            assert case["precision"] == "fp32"
            assert case["repeats"] == 1 and len(case["times_s"]) == 1
            assert case["median_s"] > 0 and case["min_s"] > 0
            assert case["images_per_s"] == run["batch"] / case["median_s"]
            if name != "pgc_per_tap":
                assert case["memory_method"] == "sampled RSS delta"
                assert isinstance(case["peak_mib"], float)
        cases = run["cases"]
        assert run["pgc_set_s"] == (cases["pgc_cnn"]["median_s"]
                                    + cases["pgc_transformer"]["median_s"]
                                    + cases["rollout_pass"]["median_s"])
        ratios = run["ratios"]
        assert ratios["ours_over_fwd_bwd"] == cases["ours_full"]["median_s"] / cases[
            "fwd_bwd"]["median_s"]
        assert ratios["pgc_set_over_ours"] == run["pgc_set_s"] / cases["ours_full"]["median_s"]
        for key in ("memory_ours_over_fwd_bwd", "pgc_per_tap_over_ours",
                    "captum_one_tap_over_ours", "ours_over_forward"):
            assert ratios[key] > 0
        assert set(run["goals"]) == {"ours_over_fwd_bwd", "pgc_set_over_ours",
                                     "memory_ours_over_fwd_bwd", "lrp_over_fwd_bwd",
                                     "lrp_pass_over_fwd_bwd"}
        assert ratios["lrp_over_fwd_bwd"] == cases["lrp"]["median_s"] / cases["fwd_bwd"][
            "median_s"]
        assert ratios["lrp_pass_over_fwd_bwd"] == cases["lrp_pass"]["median_s"] / cases[
            "fwd_bwd"]["median_s"]
        for goal in run["goals"].values():
            assert isinstance(goal["met"], bool) and goal["value"] > 0

    table = proc.stdout
    assert "| case | ms / call | img/s | x fwd+bwd | peak MiB |" in table
    assert "forward + backward to input (limit)" in table and "batch 2" in table
    assert "ours_over_fwd_bwd =" in table and "wrote " in table


def test_bf16_channels_last_subset(tmp_path):
    proc = bench(tmp_path, *SMALL, "--batch", "1", "--dtype", "bf16", "--channels-last",
                 "--no-memory", "--cases", "fwd_bwd,ours_full,pgc_cnn")
    assert proc.returncode == 0, proc.stderr
    data = only_json(tmp_path)
    assert data["config"]["channels_last"] is True and data["config"]["dtype"] == "bf16"
    assert any("autocast" in note for note in data["notes"])
    run = data["runs"][0]
    assert set(run["cases"]) == {"fwd_bwd", "ours_full", "pgc_cnn"}
    assert run["cases"]["ours_full"]["precision"] == "bf16 autocast"
    assert run["cases"]["pgc_cnn"]["precision"] == "fp32"
    assert "peak_mib" not in run["cases"]["ours_full"]
    assert "[fp32]" in proc.stdout


def test_bad_options_exit_2_with_the_problem(tmp_path):
    for args, words in ((["--batch", "0"], "--batch"), (["--cases", "fast"], "unknown case"),
                        (["--model", "no_such_model", *SMALL[2:]], "unknown model"),
                        (["--input-size", "16"], "--input-size")):
        proc = bench(tmp_path, *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert words in proc.stderr and "Traceback" not in proc.stderr
    assert not list(tmp_path.glob("*.json"))


def test_gpu_check_script_rehearses_every_step_on_the_cpu(tmp_path):
    """benchmarks/gpu_check.sh, as a lent GPU machine runs it, with its CPU rehearsal settings:
    every step must work before device minutes are spent on it."""
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, "DEVICE": "cpu",
           "MODEL": "conformer_micro_patch16", "INPUT_SIZE": "64", "BATCHES": "1,2",
           "WARMUP": "0", "REPEATS": "1"}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "pytorch_grad_cam ok" in proc.stdout and "captum ok" in proc.stdout
    for name in ("gpu_fp32", "gpu_bf16", "gpu_bf16_channels_last"):
        assert "| forward + backward to input (limit) |" in (tmp_path / f"{name}.txt").read_text()
    runs = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("explain_speed_cpu_*.json"))]
    settings = sorted((r["config"]["dtype"], r["config"]["channels_last"],
                       tuple(run["batch"] for run in r["runs"])) for r in runs)
    assert settings == [("bf16", False, (1, 2)), ("bf16", True, (2,)), ("fp32", False, (1, 2))]
