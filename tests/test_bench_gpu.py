"""`python -m bench.gpu` on the CPU provider: the code path a GPU run takes, with tiny models.

No GPU is lent to the test machines, so the benchmark runs here with `--providers cpu`:
the same raw measurement, parity against torch, and served run (a real embed server
subprocess, launched through the benchmark's own provider-narrowing launcher, on
loopback), with small batches and a short served run. The figures mean nothing; what is
checked is that every row is measured, sane and reported in both the table and the JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.gpu import gpu_providers_here, main

CPU = "CPUExecutionProvider"


# Slow: exports a model to ONNX fp32 and int8, then serves it in a subprocess.
@pytest.mark.slow
def test_cpu_provider_run_reports_every_row_in_table_and_json(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "gpu.json"
    argv = ["--models", "dinov3", "--providers", "cpu", "--precisions", "fp32,int8", "--architecture", "tiny",
            "--batches", "1,2", "--seconds", "0.1", "--served-clients", "4", "--served-seconds", "1",
            "--parity-images", "4", "--cache-dir", str(tmp_path / "onnx-cache"), "--json", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out

    report = json.loads(out.read_text())
    assert report["info"]["weights"] == "random" and report["info"]["architecture"] == "tiny"
    assert report["info"]["max_batch"] == 2
    rows = {(r["model"], r["provider"], r["precision"]): r for r in report["results"]}
    assert set(rows) == {("dinov3", CPU, "fp32"), ("dinov3", CPU, "int8")}
    for row in rows.values():
        assert row["error"] == ""
        # What the sessions actually ran on, in the benchmark and in the served subprocess.
        assert row["providers_used"] == [CPU] and row["served_providers"] == [CPU]
        assert set(row["raw_images_per_s"]) == {"1", "2"}
        assert all(rate > 0 for rate in row["raw_images_per_s"].values())
        assert row["served_images_per_s"] > 0
        assert 1.0 <= row["served_mean_batch"] <= 2.0  # the server's max batch
        parity = row["parity"]
        assert 0.9 < parity["global_min"] <= parity["global_mean"] <= 1.0 + 1e-9
        assert 0.9 < parity["patch_min"] <= parity["patch_mean"] <= 1.0 + 1e-9
        assert row["gpu_memory_mb"] == {"raw": None, "served": None} and row["gpu_memory_scope"] == "n/a"
    # fp32 ONNX Runtime on the CPU computes what torch computes.
    fp32 = rows[("dinov3", CPU, "fp32")]["parity"]
    assert fp32["global_min"] >= 0.9999 and fp32["patch_min"] >= 0.9999

    assert "weights: random" in printed and "none visible (no nvidia-smi)" in printed
    assert "| model | provider | precision | ran on | b1 img/s | b2 img/s | served img/s |" in printed
    for precision in ("fp32", "int8"):
        (line,) = [ln for ln in printed.splitlines() if ln.startswith(f"| dinov3 | CPU | {precision} | CPU |")]
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert all(float(cell) > 0 for cell in cells[4:7])  # b1, b2, served
        assert cells[-1] == "n/a / n/a"
    (fp32_line,) = [ln for ln in printed.splitlines() if ln.startswith("| dinov3 | CPU | fp32 |")]
    assert "| 1.000000 / 1.000000 | 1.000000 / 1.000000 |" in fp32_line


@pytest.mark.skipif(bool(gpu_providers_here()), reason="a GPU provider loads here: the default run would measure it")
def test_missing_gpu_provider_and_bad_arguments_are_explained(capsys: pytest.CaptureFixture[str]) -> None:
    # Default providers: those GPU providers that load, and none does here.
    assert main(["--models", "dinov3"]) == 2
    said = capsys.readouterr().err
    assert "GPU provider of ONNX Runtime does not load here" in said and "--providers cpu" in said

    assert main(["--models", "dinov3", "--providers", "cuda,cpu"]) == 2
    assert "CUDA provider of ONNX Runtime does not load here" in capsys.readouterr().err

    assert main(["--models", "dinov3", "--providers", "cpu", "--precisions", "fp16"]) == 2
    assert "fp16 needs a GPU provider" in capsys.readouterr().err

    for argv, expected in ((["--models", "nope"], "unknown model nope; valid: clip"),
                           (["--providers", "rocm"], "unknown provider rocm; valid: tensorrt, cuda, cpu"),
                           (["--batches", "1,x"], "--batches must be whole numbers"),
                           (["--architecture", "tiny", "--weights", "pretrained"], "tiny needs --weights random")):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
        assert expected in capsys.readouterr().err


def test_a_model_that_cannot_load_fails_its_rows_and_the_run_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    # Pretrained weights are on no test machine: each model's rows say why, none is skipped.
    monkeypatch.setenv("EMBED_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    out = tmp_path / "gpu.json"
    argv = ["--models", "dinov3,clip", "--providers", "cpu", "--weights", "pretrained", "--batches", "1",
            "--cache-dir", str(tmp_path / "onnx-cache"), "--json", str(out)]
    assert main(argv) == 1
    rows = json.loads(out.read_text())["results"]
    assert [(r["model"], r["precision"]) for r in rows] == [("dinov3", "fp32"), ("clip", "fp32")]
    for row in rows:
        assert f"pretrained weights for {row['model']}" in row["error"] and "fetch_weights" in row["error"]
        assert row["raw_images_per_s"] == {} and row["served_images_per_s"] is None
    printed = capsys.readouterr().out
    assert "weights: pretrained" in printed
    assert "| dinov3 | CPU | fp32 | - (failed: the torch fp32 reference did not build: WeightsNotFound:" in printed
