"""`bmcell predict` on many images: bounded batches, each answered and printed before the next is read; a degenerate
image is refused by name and the others in the same call are still answered."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from bmcell.cli.main import app
from bmcell.core import inference

runner = CliRunner()


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "table"])
def test_predict_answers_each_batch_before_reading_the_next(tiny_run, synthetic_data, monkeypatch, capsys, as_json):
    """With batches of 4, the model never sees more than 4 images, and when the 5th and 9th images are read the
    answers of every image before them are already printed (deterministic: no timing, no memory figure)."""
    monkeypatch.setattr(inference, "BATCH", 4, raising=False)
    images = sorted(synthetic_data.rglob("*.jpg"))[:10]
    batch_sizes, printed, shown_at_read = [], [], {}

    def reading(path):  # what stdout holds when each image is read
        printed.append(capsys.readouterr().out)
        shown_at_read[path] = "".join(printed)
        return load_rgb(path)

    def counting_init(self, *args):
        classifier_init(self, *args)
        model = self.model
        self.model = lambda inputs: batch_sizes.append(len(inputs)) or model(inputs)

    load_rgb, classifier_init = inference.load_rgb, inference.Classifier.__init__
    monkeypatch.setattr(inference, "load_rgb", reading)
    monkeypatch.setattr(inference.Classifier, "__init__", counting_init)
    args = ["predict", str(tiny_run), *map(str, images)] + (["--json"] if as_json else [])
    with pytest.raises(SystemExit) as exited:
        app(args, prog_name="bmcell")
    assert exited.value.code == 0
    output = "".join(printed) + capsys.readouterr().out
    assert batch_sizes == [4, 4, 2]
    for first_unread in (4, 8):
        for image in images:
            answered = image.name in shown_at_read[images[first_unread]]
            assert answered == (images.index(image) < first_unread), (image, first_unread)
    if as_json:  # the streamed array is the one json.dumps would give, in order
        answers = json.loads(output)
        assert [a["image"] for a in answers] == list(map(str, images))
        assert output == json.dumps(answers, indent=2) + "\n"
    else:
        assert all(sum(image.name in line for line in output.splitlines()) == 1 for image in images), output
        assert output.count("┏") == output.count("└") == 1, output  # one table: one top and one bottom edge


def test_predict_refuses_a_degenerate_image_by_name_and_answers_the_others(tiny_run, synthetic_data, tmp_path):
    """A 4,000,000x1 PNG (a few hundred bytes, under the pixel limit) would resize to ~49 GB: it is refused from its
    header like any bad file, and the good image in the same call is answered."""
    strip = tmp_path / "strip.png"
    Image.new("1", (4_000_000, 1)).save(strip)
    good = sorted(synthetic_data.rglob("*.jpg"))[0]
    result = runner.invoke(app, ["predict", str(tiny_run), str(strip), str(good), "--json"])
    assert result.exit_code == 1, result.output
    answers = json.loads(result.stdout)
    assert answers[0] == {"image": str(strip), "error": answers[0]["error"]}
    assert answers[0]["error"].startswith(f"{strip}: 4000000x1 pixels is over the 100:1 aspect-ratio limit")
    assert answers[1]["image"] == str(good) and answers[1]["top"]
    assert f"error: {strip}: 4000000x1" in result.stderr
    table = runner.invoke(app, ["predict", str(tiny_run), str(good), str(strip)])
    assert table.exit_code == 1 and good.name in table.stdout and "strip.png" not in table.stdout, table.output
