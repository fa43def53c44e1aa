"""`latentmap sample` as a user runs it: the HTML / PNG gallery, and one-line errors."""

from __future__ import annotations

import re

import pytest
from latentmap.cli import main
from latentmap.pipeline.decoders import train_demo_decoder


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def decoder(demo):
    store, ds = demo
    return train_demo_decoder(store, ds, "encoder")


def test_sample_writes_a_standalone_html_gallery(demo, decoder, capsys, tmp_path):
    store, ds = demo
    out = tmp_path / "samples.html"
    code, stdout, err = run(
        capsys, "--cache-dir", store.root, "sample", ds, "--n", 8, "--seed", 3, "--out", out
    )
    assert code == 0, err
    assert "8 samples of layer encoder" in stdout and f"wrote {out}" in stdout
    page = out.read_text()
    assert page.count('class="card" id="sample-') == 8
    assert page.count("data:image/png;base64,") >= 16  # nearest + random thumbnails
    assert "Plotly.newPlot" in page and '"name":"samples"' in page  # the map, plotly inlined
    assert "<script src=" not in page  # plotly.js inlined: works offline
    assert "random items (baseline)" in page and "No decoder given" in page
    # with a decoder (TorchScript), a region and a mixture
    out2 = tmp_path / "threes.html"
    code, stdout, err = run(
        capsys,
        "--cache-dir",
        store.root,
        "sample",
        "digits-demo",
        "--n",
        "5",
        "--dist",
        "gmm",
        "--k",
        "2",
        "--region",
        "label=3",
        "--decoder",
        decoder,
        "--map",
        "none",
        "--out",
        out2,
    )
    assert code == 0, err
    page = out2.read_text()
    assert page.count('alt="decoded"') == 5 and "label = 3" in page
    assert "No decoder given" not in page and "Plotly.newPlot" not in page


@pytest.mark.slow
def test_sample_writes_a_png(demo, decoder, capsys, tmp_path):
    from PIL import Image

    store, ds = demo
    out = tmp_path / "samples.png"
    code, stdout, err = run(
        capsys,
        "--cache-dir",
        store.root,
        "sample",
        ds,
        "--n",
        6,
        "--decoder",
        decoder,
        "--out",
        out,
    )
    assert code == 0, err
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] == 2400 and im.size[1] > 800
        colours = im.convert("L").getextrema()
    assert colours[0] < 20 and colours[1] > 235  # dark digits drawn on white


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope", "--out", "x.html"], "no dataset 'nope'"),
        (["{ds}", "--layer", "fc7", "--out", "x.html"], "has no layer 'fc7'"),
        (["{ds}", "--region", "label=42", "--out", "x.html"], "no item has label = '42'"),
        (
            ["{ds}", "--region", "file=digit_0000.png", "--out", "x.html"],
            "a region needs at least 2 items with finite latents, got 1",
        ),
        (["{ds}", "--region", "label", "--out", "x.html"], "--region must be COL=VALUE"),
        (
            ["{ds}", "--layer", "head", "--decoder", "{decoder}", "--out", "x.html"],
            "decoder expects latents of size 32 but layer head has 10",
        ),
        (["{ds}", "--n", "0", "--out", "x.html"], "--n must be at least 1, got 0"),
        (["{ds}", "--n", "many", "--out", "x.html"], "--n must be a whole number"),
        (["{ds}", "--dist", "cauchy", "--out", "x.html"], "--dist 'cauchy'"),
        (["{ds}", "--out", "x.pdf"], "--out must end in .html or .png"),
        (["{ds}", "--decoder", "/no/such.pt", "--out", "x.html"], "decoder not found"),
        (["{ds}", "--decoder-checkpoint", "w.pt", "--out", "x.html"], "needs --decoder"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(demo, decoder, capsys, tmp_path, args, message):
    store, ds = demo
    argv = [a.format(ds=ds, decoder=decoder) for a in args]
    argv[-1] = str(tmp_path / argv[-1])
    code, stdout, err = run(capsys, "--cache-dir", store.root, "sample", *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("latentmap: error: "), err
    assert message in lines[0]
    assert not list(tmp_path.iterdir())  # nothing written


def test_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["sample", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert re.search(r"--region COL=VALUE", text) and "--decoder SPEC" in text
