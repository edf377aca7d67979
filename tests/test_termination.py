"""All or nothing under termination: a SIGTERM at any instant of prepare, train, evaluate or
impute leaves the old complete output set or the new one, never a mix and never a temporary file;
a second writer into the same folder is refused; a mixed prepared folder is refused by readers.

Two kinds of test: commands killed at random instants (subprocesses, many times), and the signal
sent from inside the rename phase, after each rename in turn (the only instant where a mix could
arise), through the real CLI and its signal handler.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers import pinned_env
from safetensors import safe_open

from getdiff import io as getdiff_io
from getdiff.cli import main
from getdiff.errors import GetdiffError, InputError
from getdiff.io import exclusive
from getdiff.tensors import MANIFEST, read_metadata

ROOT = Path(__file__).resolve().parents[1]


def run_cli(argv: list[str]) -> subprocess.Popen:
    """``python -m getdiff ARGV``; children whose outputs are compared byte for byte all run
    on one thread (``--threads 1`` and pinned_env), so on this machine their arithmetic agrees."""
    return subprocess.Popen(
        [sys.executable, "-m", "getdiff", *argv],
        cwd=ROOT,
        env=pinned_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def temporary_files(directory: Path) -> list[str]:
    return [p.name for p in directory.rglob("*") if p.name.endswith(".tmp") or "lock" in p.name]


def prepared_set(outdir: Path) -> tuple[str, int] | None:
    """(run id, window size) of a complete prepared folder; None if it holds nothing at all.
    Fails the test on a mixed or partial folder."""
    files = sorted(p.name for p in outdir.iterdir()) if outdir.exists() else []
    if not files:
        return None
    manifest = json.loads((outdir / MANIFEST).read_text())
    assert sorted([*manifest["files"], MANIFEST]) == files
    # read_metadata checks each file against the manifest.
    metas = [read_metadata(outdir / name) for name in manifest["files"]]
    assert {m["prepare_id"] for m in metas} == {manifest["prepare_id"]}
    sizes = {m["window_size"] for m in metas if "window_size" in m}
    assert sizes == {manifest["window_size"]}
    return manifest["prepare_id"], manifest["window_size"]


def toy_config(toy, directory: Path, **prepare) -> Path:  # noqa: F811
    config = yaml.safe_load(toy["config"].read_text())
    config["prepare"].update(prepare)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def kill_at_random_instants(argv: list[str], runs: int, seed: int, reset, check) -> None:
    """Run ``argv`` ``runs`` times, each SIGTERMed after a random delay within one full run's
    duration (some runs finish first). ``reset()`` restores the old outputs before each run;
    ``check()`` inspects the outputs after it."""
    started = time.monotonic()
    whole = run_cli(argv)
    assert whole.wait() == 0, whole.stderr.read()
    duration = time.monotonic() - started
    rng = random.Random(seed)
    for _ in range(runs):
        reset()
        process = run_cli(argv)
        time.sleep(rng.uniform(0, duration))
        process.send_signal(signal.SIGTERM)
        code = process.wait()
        assert code in (0, 128 + signal.SIGTERM, -signal.SIGTERM), process.stderr.read()
        check()


def test_prepare_killed_at_random_instants_leaves_the_old_or_the_new_set(tmp_path, toy):  # noqa: F811
    outdir = tmp_path / "prepared" / "toy"
    old = toy_config(toy, tmp_path / "old")
    new = toy_config(toy, tmp_path / "new", window_size=3)
    argv = ["prepare", "--cell-type", "toy", "--outdir", str(outdir), "--config"]
    assert main([*argv, str(old)]) == 0
    old_id = prepared_set(outdir)
    seen = set()

    def check() -> None:
        assert not temporary_files(outdir)
        state = prepared_set(outdir)
        assert state is not None and state[1] in (3, 4)
        seen.add(state[1])

    def reset() -> None:
        assert main([*argv, str(old)]) == 0

    kill_at_random_instants([*argv, str(new)], runs=8, seed=0, reset=reset, check=check)
    assert old_id is not None and seen <= {3, 4}


@pytest.mark.parametrize("after", [1, 2, 3, 4])
def test_sigterm_inside_the_rename_phase_is_held_until_the_new_set_is_complete(
    tmp_path,
    toy,  # noqa: F811
    monkeypatch,
    after,
):
    outdir = tmp_path / "prepared" / "toy"
    argv = ["prepare", "--cell-type", "toy", "--outdir", str(outdir), "--config"]
    assert main([*argv, str(toy_config(toy, tmp_path / "old"))]) == 0
    renames = []
    real_replace = os.replace

    def replace_then_signal(source, target):
        real_replace(source, target)
        renames.append(target)
        if len(renames) == after:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(getdiff_io.os, "replace", replace_then_signal)
    code = main([*argv, str(toy_config(toy, tmp_path / "new", window_size=3))])
    assert code == 128 + signal.SIGTERM
    assert len(renames) == 5 and Path(renames[-1]).name == MANIFEST  # every rename ran, marker last
    assert prepared_set(outdir)[1] == 3 and not temporary_files(outdir)


def test_sigterm_before_the_rename_phase_keeps_the_old_set_and_removes_temporaries(
    tmp_path,
    toy,  # noqa: F811
    monkeypatch,
):
    outdir = tmp_path / "prepared" / "toy"
    argv = ["prepare", "--cell-type", "toy", "--outdir", str(outdir), "--config"]
    assert main([*argv, str(toy_config(toy, tmp_path / "old"))]) == 0
    before = prepared_set(outdir)
    import getdiff.prepare as prepare

    real = prepare.write_region_table

    def write_then_signal(*args, **kwargs):
        real(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(prepare, "write_region_table", write_then_signal)
    code = main([*argv, str(toy_config(toy, tmp_path / "new", window_size=3))])
    assert code == 128 + signal.SIGTERM
    assert prepared_set(outdir) == before and not temporary_files(outdir)


def output_bytes(outdir: Path, names: list[str]) -> dict[str, bytes] | None:
    """Bytes of each output (directories: their files, by relative path); None if none exists."""
    if not any((outdir / name).exists() for name in names):
        return None
    found = {}
    for name in names:
        path = outdir / name
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        for file in files:
            found[str(file.relative_to(outdir))] = canonical_bytes(file)
    return found


def canonical_bytes(path: Path) -> bytes:
    """The file's bytes; for safetensors, its tensors and sorted metadata (the header's key
    order differs from process to process); for the history, all but the measured speeds."""
    if path.name == "history.tsv":
        history = pd.read_csv(path, sep="\t")
        return history.drop(columns=["steps_per_s", "tokens_per_s", "gflops"]).to_csv().encode()
    if path.suffix != ".safetensors":
        return path.read_bytes()
    with safe_open(path, "pt") as handle:
        metadata = json.dumps(handle.metadata(), sort_keys=True).encode()
        tensors = [
            name.encode() + handle.get_tensor(name).numpy().tobytes()
            for name in sorted(handle.keys())
        ]
    return metadata + b"".join(tensors)


@pytest.mark.parametrize("command", ["train", "evaluate", "impute"])
def test_train_evaluate_and_impute_killed_at_random_instants_leave_old_or_new_outputs(
    tmp_path,
    toy,  # noqa: F811
    command,
):
    outdir = tmp_path / "out"
    configs = []
    for name, seed in (("old", 0), ("new", 1)):
        config = yaml.safe_load(toy["config"].read_text())
        config["train"].update(seed=seed, max_steps=3)
        config["evaluate"] = {"seed": seed}
        config["impute"] = {"seed": seed, "num_samples": 2}
        (tmp_path / name).mkdir()
        path = tmp_path / name / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        configs.append(path)
    prepared = str(toy["prepared"])
    threads = ["--threads", "1"]
    if command == "train":
        names = ["model.safetensors", "adapter", "history.tsv", "config.yaml"]
        argv = ["train", "--group", "all", "--prepared-dir", prepared, "--outdir", str(outdir)]
        argv += threads
    elif command == "evaluate":
        names = ["metrics.json", "metrics_per_feature.tsv", "plots"]
        calibration = str(tmp_path / "calibration.parquet")
        calibrate = ["calibrate", "--group", "all", "--model", str(toy["model"])]
        calibrate += ["--prepared-dir", prepared, "--output", calibration, "--config"]
        assert run_cli([*calibrate, str(configs[0])]).wait() == 0
        argv = ["evaluate", "--group", "all", "--model", str(toy["model"])]
        argv += ["--calibration", calibration]
        argv += ["--prepared-dir", prepared, "--outdir", str(outdir), *threads]
    else:
        names = ["toy.parquet"]
        argv = ["impute", "--cell-type", "toy", "--model", str(toy["model"])]
        argv += ["--prepared-dir", prepared, "--output", str(outdir / "toy.parquet"), *threads]

    def complete_run(config: Path) -> None:
        # A training run refuses another config's checkpoint; the sets under test are the outputs.
        shutil.rmtree(outdir / "checkpoints", ignore_errors=True)
        process = run_cli([*argv, "--config", str(config)])  # as the killed runs (same process
        assert process.wait() == 0, process.stderr.read()  # setup, same arithmetic)
        shutil.rmtree(outdir / "checkpoints", ignore_errors=True)

    sets = []
    for config in configs:
        complete_run(config)
        sets.append(output_bytes(outdir, names))
    assert sets[0] != sets[1]

    def check() -> None:
        assert output_bytes(outdir, names) in sets
        assert not temporary_files(outdir)

    new_argv = [*argv, "--config", str(configs[1])]
    kill_at_random_instants(new_argv, 3, 1, reset=lambda: complete_run(configs[0]), check=check)


def test_a_second_writer_into_the_same_folder_is_refused(tmp_path):
    with exclusive(tmp_path, "prepare"):
        with pytest.raises(GetdiffError, match="another getdiff process is writing here"):
            with exclusive(tmp_path, "prepare"):
                pass
    with exclusive(tmp_path, "prepare"):  # released: the next writer proceeds
        pass
    assert not any(tmp_path.iterdir())


def test_a_prepare_into_a_locked_folder_exits_2_and_leaves_it_alone(tmp_path, toy, capsys):  # noqa: F811
    outdir = tmp_path / "prepared" / "toy"
    argv = ["prepare", "--cell-type", "toy", "--outdir", str(outdir), "--config"]
    with exclusive(outdir, "prepare"):
        assert main([*argv, str(toy["config"])]) == 2
    assert "another getdiff process is writing here" in capsys.readouterr().err
    assert not (outdir / MANIFEST).exists()


def test_a_mixed_prepared_folder_is_refused_by_its_readers(tmp_path, toy):  # noqa: F811
    first, second = tmp_path / "first", tmp_path / "second"
    argv = ["prepare", "--cell-type", "toy", "--config"]
    assert main([*argv, str(toy_config(toy, tmp_path / "a")), "--outdir", str(first)]) == 0
    assert main([*argv, str(toy_config(toy, tmp_path / "b")), "--outdir", str(second)]) == 0
    # A file of another run of the same settings (same size, another run id): a mixed folder.
    (first / "windows_test.parquet").write_bytes((second / "windows_test.parquet").read_bytes())
    with pytest.raises(InputError, match="is not the file manifest.json lists"):
        read_metadata(first / "windows_test.parquet")
    (second / MANIFEST).unlink()  # an unfinished run: no manifest
    with pytest.raises(InputError, match="did not finish"):
        read_metadata(second / "windows_train.parquet")
