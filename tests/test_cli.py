"""The `latentmap` command as a user runs it: messages, exit codes, resume after a kill."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from latentmap.cli import main
from latentmap.pipeline.store import Store

MODELS = Path(__file__).parent / "data" / "user_models.py"
LATENTMAP = [sys.executable, "-m", "latentmap.cli"]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_on_every_verb(capsys):
    for verb in ("encode", "reduce", "serve", "list"):
        with pytest.raises(SystemExit) as e:
            main([verb, "--help"])
        assert e.value.code == 0
        assert verb in capsys.readouterr().out


def test_encode_summary_and_skips(capsys, tmp_path, image_folder):
    code, out, err = run(
        capsys,
        "--cache-dir",
        str(tmp_path / "c"),
        "encode",
        str(image_folder),
        "--image-size",
        "8",
        "--workers",
        "0",
    )
    assert code == 0
    assert "skipped dark/empty.png: empty file" in out
    assert "encoded 24 items, skipped 4" in out
    ds = out.strip().splitlines()[-1]
    assert Store(tmp_path / "c").has_dataset(ds)
    code, out, _ = run(capsys, "--cache-dir", str(tmp_path / "c"), "list")
    assert ds in out and "complete" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["encode", "/no/such/folder"], "not"),
        (
            ["encode", "{images}", "--model", "{models}:TinyEncoder", "--layer", "fc7"],
            "unknown layer 'fc7'",
        ),
        (
            [
                "encode",
                "{images}",
                "--model",
                "{models}:TinyEncoder",
                "--checkpoint",
                "/no/ckpt.pt",
            ],
            "checkpoint not found",
        ),
        (["encode", "{images}", "--pool", "median"], "unknown pooling"),
        (["encode", "{images}", "--device", "cuda"], "CUDA"),
        (["reduce", "nosuchdataset"], "no dataset 'nosuchdataset'"),
    ],
)
def test_bad_input_is_one_line_not_a_traceback(capsys, tmp_path, image_folder, args, message):
    if "cuda" in args:
        import torch

        if torch.cuda.is_available():
            pytest.skip("a GPU is present")
    args = [a.format(images=image_folder, models=MODELS) for a in args]
    code, out, err = run(capsys, "--cache-dir", str(tmp_path / "c"), *args)
    assert code == 2
    assert message in err
    assert "Traceback" not in err and err.startswith("latentmap: error:")
    assert len(err.strip().splitlines()) == 1


def test_argparse_rejects_bad_numbers(capsys, image_folder):
    with pytest.raises(SystemExit) as e:
        main(["encode", str(image_folder), "--batch-size", "0"])
    assert e.value.code == 2
    assert "positive integer" in capsys.readouterr().err


def test_nothing_readable_exits_nonzero(capsys, tmp_path):
    d = tmp_path / "junk"
    d.mkdir()
    (d / "a.png").write_bytes(b"nope")
    code, _, err = run(capsys, "--cache-dir", str(tmp_path / "c"), "encode", str(d))
    assert code == 2 and "could be" in err


def _slow_encode(cache, image_folder, min_parts: int):
    """Start a slow `latentmap encode` subprocess; return (proc, cmd, parts) once it has
    written at least ``min_parts`` batch parts."""
    cmd = [
        *LATENTMAP,
        "--cache-dir",
        str(cache),
        "encode",
        str(image_folder),
        "--model",
        f"{MODELS}:Slow",
        "--batch-size",
        "2",
        "--workers",
        "0",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        parts = list(cache.glob("datasets/*/parts/*.npz"))
        if len(parts) >= min_parts:
            return proc, cmd, parts
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("encode never wrote a part")


@pytest.mark.slow
def test_killed_encode_resumes(tmp_path, image_folder):
    """SIGKILL mid-encode, then the same command finishes from the last completed batch."""
    proc, cmd, parts = _slow_encode(tmp_path / "c", image_folder, min_parts=3)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    ds_dir = parts[0].parent.parent
    done_before = len(list((ds_dir / "parts").glob("*.npz")))
    assert 3 <= done_before < 14  # 27 image files / 2 per batch
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert f"resuming: {done_before} of 14 batches already done" in out.stderr
    assert "encoded 24 items" in out.stdout
    assert not (ds_dir / "parts").exists()


@pytest.mark.slow
def test_ctrl_c_says_how_to_resume(tmp_path, image_folder):
    proc, _, _ = _slow_encode(tmp_path / "c", image_folder, min_parts=1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "run the same command to resume" in err
    assert "Traceback" not in err


def test_embeddings_then_reduce_pca(capsys, tmp_path):
    v = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    np.save(tmp_path / "emb.npy", v)
    code, out, _ = run(
        capsys,
        "--cache-dir",
        str(tmp_path / "c"),
        "encode",
        str(tmp_path / "emb.npy"),
        "--name",
        "emb",
    )
    assert code == 0
    code, out, err = run(
        capsys, "--cache-dir", str(tmp_path / "c"), "reduce", "emb", "--method", "pca"
    )
    assert code == 0, err
    assert "pca" in out and "embedding" in out
    code, out, _ = run(capsys, "--cache-dir", str(tmp_path / "c"), "list")
    assert "emb" in out and " 1 " in out  # one projection cached


def test_export_formats(capsys, tmp_path):
    v = np.random.default_rng(0).normal(size=(12, 3)).astype(np.float32)
    np.save(tmp_path / "emb.npy", v)
    cache = ["--cache-dir", str(tmp_path / "c")]
    assert run(capsys, *cache, "encode", str(tmp_path / "emb.npy"), "--name", "e")[0] == 0
    code, out, err = run(
        capsys, *cache, "export", "e", "--format", "npz", "--out", str(tmp_path / "x.npz")
    )
    assert code == 0, err
    with np.load(tmp_path / "x.npz") as z:
        np.testing.assert_allclose(z["latents"], v)
    code, out, err = run(
        capsys,
        *cache,
        "export",
        "e",
        "--format",
        "csv",
        "--out",
        str(tmp_path / "t"),
        "--method",
        "pca",
        "--vectors",
    )
    assert code == 0, err
    import pandas as pd

    t = pd.read_csv(tmp_path / "t.csv")
    assert {"x", "y", "v0", "v2"} <= set(t.columns) and len(t) == 12
    code, _, err = run(
        capsys, *cache, "export", "e", "--format", "tensorboard", "--out", str(tmp_path / "tb")
    )
    assert code == 0 and (tmp_path / "tb" / "vectors.tsv").exists()
    code, _, err = run(
        capsys, *cache, "export", "e", "--format", "npz", "--out", "x.npz", "--layer", "nope"
    )
    assert code == 2 and "no layer 'nope'" in err
