from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainforge.loggers import JsonlLogger
from trainforge.report import (
    CLASSIFICATION_FILE,
    RunDataNotFoundError,
    Section,
    build_report,
    list_sections,
    load_classification_data,
    per_class_scores,
    register_section,
    save_classification_data,
    unregister_section,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PACKAGES = [Path(__file__).parents[3] / "trainforge" / name for name in ("metrics", "loggers", "report")]


class References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.references: list[str] = []
        self.texts: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.references += [value for name, value in attrs if name in ("src", "href") and value]

    def handle_data(self, data):
        self.texts.append(data)


def _loss(step: int, resumed: bool = False) -> float:
    return 2.0 / step + (0.05 if resumed else 0.0)


def _write_metrics(run: Path) -> None:
    """20 steps, 2 epochs; then a resume from the checkpoint at step 14 that logs steps 15-25 again."""
    with JsonlLogger(run / "metrics.jsonl") as logger:
        for step in range(1, 21):
            epoch = (step - 1) // 10
            logger.log_metrics({"train/loss": _loss(step), "lr": 0.1 * 0.9**step, "grad_norm": 1.0 + step,
                                "global_step": step}, step=step, epoch=epoch)
            if step % 5 == 0:
                logger.log_metrics({"throughput/samples_per_s": 1000.0 + step, "throughput/step_time_s": 0.03},
                                   step=step, epoch=epoch)
            if step % 10 == 0:
                logger.log_metrics({"valid/loss": 1.0 / step, "valid/accuracy": 0.5 + step / 100,
                                    "valid_noisy/accuracy": 0.3 + step / 100}, step=step, epoch=epoch)
    with JsonlLogger(run / "metrics.jsonl") as logger:  # the resumed run appends
        for step in range(15, 26):
            logger.log_metrics({"train/loss": _loss(step, resumed=True), "lr": 0.1 * 0.9**step}, step=step,
                               epoch=(step - 1) // 10)
            if step in (20, 25):
                logger.log_metrics({"valid/accuracy": 0.9 + step / 1000}, step=step, epoch=(step - 1) // 10)


@pytest.fixture(scope="module")
def classification_run(tmp_path_factory, digits_model):
    run = tmp_path_factory.mktemp("run")
    _write_metrics(run)
    (run / "config.yaml").write_text("model: <b>mlp</b>\noptimizer: {name: SGD, lr: 0.1}\n")
    extras = run / "report" / "extras"
    extras.mkdir(parents=True)
    (extras / "test_metrics.json").write_text(json.dumps({"test/accuracy": 0.93, "test/loss": 0.21}))
    images, targets, probs, matrix, names = digits_model
    save_classification_data(run, images[:64], targets[:64], probs[:64], names, matrix)
    page = build_report(run, strict=True)
    return run, page


@pytest.fixture(scope="module")
def digits_model():
    """A real (tiny) classifier: logistic regression on scikit-learn's digits, evaluated on a held-out split."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import confusion_matrix

    from trainforge.data import load_digits_split

    train, valid = load_digits_split(seed=0)
    x_train, y_train = train.tensors[0].flatten(1).numpy(), train.tensors[1].numpy()
    x_valid, y_valid = valid.tensors[0].flatten(1).numpy(), valid.tensors[1].numpy()
    model = LogisticRegression(max_iter=1000).fit(x_train[:600], y_train[:600])
    probs = torch.from_numpy(model.predict_proba(x_valid)).float()
    matrix = torch.from_numpy(confusion_matrix(y_valid, probs.argmax(1).numpy(), labels=list(range(10))))
    names = [f"digit {i}" for i in range(10)]
    return valid.tensors[0], valid.tensors[1], probs, matrix, names


def test_every_reference_exists_and_every_png_is_valid(classification_run):
    run, page = classification_run
    assert page == run / "report" / "index.html"
    parser = References()
    parser.feed(page.read_text(encoding="utf-8"))
    files = [ref for ref in parser.references if not ref.startswith("#")]
    assert not [ref for ref in files if "://" in ref or ref.startswith("//")]  # nothing from the network
    for ref in files:
        assert (page.parent / ref).is_file(), ref
    pngs = [ref for ref in files if ref.endswith(".png")]
    expected = {"curve_loss.png", "curve_accuracy.png", "lr_learning_rate.png", "confusion_matrix.png",
                "per_class.png", "samples_best.png", "samples_worst.png", "samples_confused.png",
                "throughput_samples_per_s.png", "other_grad_norm.png"}
    assert expected <= set(pngs)
    for png in pngs:
        path = page.parent / png
        assert path.read_bytes()[:8] == PNG_MAGIC
        with Image.open(path) as image:
            image.verify()
    anchors = {ref[1:] for ref in parser.references if ref.startswith("#")}
    assert anchors and all(f"id='{anchor}'" in page.read_text() for anchor in anchors)
    assert not list(page.parent.glob(".*"))  # no temporary files left behind


def test_plotted_curves_match_metrics_jsonl(classification_run):
    run, _ = classification_run
    curves = json.loads((run / "report" / "data" / "curves.json").read_text())
    series = curves["series"]
    # what the jsonl holds, the resumed run superseding steps 15-20 of the first run
    assert series["train/loss"]["steps"] == list(range(1, 26))
    want = [_loss(s) for s in range(1, 15)] + [_loss(s, resumed=True) for s in range(15, 26)]
    assert series["train/loss"]["values"] == pytest.approx(want)
    assert series["valid/accuracy"] == {"steps": [10, 20, 25], "values": pytest.approx([0.6, 0.92, 0.925])}
    assert series["valid_noisy/accuracy"]["steps"] == [10, 20]
    assert series["valid/loss"]["values"] == pytest.approx([0.1, 0.05])
    assert series["lr"]["steps"] == list(range(1, 26))
    assert curves["figures"]["curve_accuracy.png"] == ["valid/accuracy", "valid_noisy/accuracy"]
    assert sorted(curves["figures"]["curve_loss.png"]) == ["train/loss", "valid/loss"]
    assert "global_step" not in series  # counters are not plotted


def test_classification_tables_match_sklearn(classification_run, digits_model):
    from sklearn.metrics import precision_recall_fscore_support

    _, page = classification_run
    _, targets, probs, matrix, _ = digits_model
    precision, recall, f1, support = precision_recall_fscore_support(
        targets.numpy(), probs.argmax(1).numpy(), labels=list(range(10)), zero_division=0)
    scores = per_class_scores(matrix)
    np.testing.assert_allclose(scores["precision"].numpy(), precision, atol=1e-12)
    np.testing.assert_allclose(scores["recall"].numpy(), recall, atol=1e-12)
    np.testing.assert_allclose(scores["f1"].numpy(), f1, atol=1e-12)
    np.testing.assert_array_equal(scores["support"].numpy(), support)
    html = page.read_text(encoding="utf-8")
    accuracy = float((probs.argmax(1) == targets).float().mean())
    assert f"<td>accuracy</td><td>{accuracy:.4g}</td>" in html
    row = re.search(r"<tr><td>digit 3</td>((?:<td>[^<]*</td>){4})</tr>", html)
    cells = re.findall(r"<td>([^<]*)</td>", row.group(1))
    assert cells == [f"{precision[3]:.4g}", f"{recall[3]:.4g}", f"{f1[3]:.4g}", str(support[3])]


def test_config_extras_and_escaping(classification_run):
    _, page = classification_run
    html = page.read_text(encoding="utf-8")
    assert "&lt;b&gt;mlp&lt;/b&gt;" in html and "<b>mlp</b>" not in html
    assert "test_metrics.json" in html and "<td>0.93</td>" in html
    assert "<script" not in html and "http" not in html.replace("http-equiv", "")


def test_classification_data_round_trip_and_checks(tmp_path):
    path = save_classification_data(tmp_path, torch.rand(3, 3, 4, 4), torch.tensor([0, 1, 1]),
                                    torch.rand(3, 2).softmax(1), ["a", "b"], torch.tensor([[1, 0], [1, 1]]))
    assert path == tmp_path / CLASSIFICATION_FILE
    data = load_classification_data(path)
    assert data["confusion_matrix"].dtype == torch.long and data["images"].shape == (3, 3, 4, 4)
    assert [p.name for p in path.parent.iterdir()] == ["classification.pt"]  # the temporary file is gone
    with pytest.raises(ValueError, match="probs must be"):
        save_classification_data(tmp_path, torch.rand(3, 1, 4, 4), torch.tensor([0, 1, 1]), torch.rand(3, 3),
                                 ["a", "b"], torch.eye(2))
    with pytest.raises(ValueError, match="class indices"):
        save_classification_data(tmp_path, torch.rand(1, 1, 4, 4), torch.tensor([5]), torch.rand(1, 2),
                                 ["a", "b"], torch.eye(2))


def test_missing_metrics_names_the_path(tmp_path):
    with pytest.raises(RunDataNotFoundError, match=re.escape(str(tmp_path / "metrics.jsonl"))) as info:
        build_report(tmp_path)
    assert isinstance(info.value, ValueError) and isinstance(info.value, FileNotFoundError)


def test_minimal_run_and_truncated_jsonl(tmp_path):
    with JsonlLogger(tmp_path / "metrics.jsonl") as logger:
        logger.log_metrics({"train/loss": 1.0}, step=1)
        logger.log_metrics({"train/loss": 0.5}, step=2)
    with open(tmp_path / "metrics.jsonl", "a") as file:
        file.write('{"step": 3, "metr')  # the crash
    with pytest.warns(UserWarning, match="cut short"):
        page = build_report(tmp_path, strict=True)
    html = page.read_text()
    assert "curve_loss.png" in html and "confusion_matrix.png" not in html
    curves = json.loads((tmp_path / "report" / "data" / "curves.json").read_text())
    assert curves["series"]["train/loss"] == {"steps": [1, 2], "values": [1.0, 0.5]}


def test_registered_sections_extend_the_report_and_failures_are_contained(tmp_path):
    with JsonlLogger(tmp_path / "metrics.jsonl") as logger:
        logger.log_metrics({"train/loss": 1.0}, step=1)

    def overlays(run_dir, out_dir):
        from trainforge.report.plots import new_figure, save_figure

        figure = new_figure()
        figure.add_subplot().imshow(np.zeros((4, 4)))
        save_figure(figure, out_dir / "overlay.png")
        return [Section("Segmentation overlays", "<p>masks</p>", ["overlay.png"])]

    def broken(run_dir, out_dir):
        raise RuntimeError("no embeddings saved")

    register_section("overlays", overlays)
    register_section("broken", broken)
    try:
        assert list_sections()[-2:] == ["overlays", "broken"]
        with pytest.raises(ValueError, match="already registered"):
            register_section("overlays", overlays)
        with pytest.raises(RuntimeError, match="no embeddings"):
            build_report(tmp_path, strict=True)
        with pytest.warns(UserWarning, match="broken"):
            html = build_report(tmp_path).read_text()
        assert "Segmentation overlays" in html and "<img src='overlay.png'" in html
        assert "broken (failed)" in html and "no embeddings saved" in html
    finally:
        unregister_section("overlays")
        unregister_section("broken")
    assert "overlays" not in list_sections()


def test_torch_load_always_passes_weights_only_true():
    calls = []
    for package in PACKAGES:
        for path in package.rglob("*.py"):
            for match in re.finditer(r"torch\.load\(([^()]*(?:\([^()]*\)[^()]*)*)\)", path.read_text()):
                calls.append((path.name, match.group(1)))
    assert calls, "expected the report to load saved tensors"
    for name, arguments in calls:
        assert "weights_only=True" in arguments, name


def test_one_confusion_matrix_per_evaluated_loader_titled_with_its_weights(tmp_path, digits):
    """Through fit: the main validation set's matrix once (with the weights it shows), each extra loader's
    once, and no training-epoch matrix."""
    from helpers import cfg, mlp
    from torch.utils.data import Subset

    from trainforge import Trainer

    valid = Subset(digits[1], range(64))
    config = cfg(tmp_path, report=True, ema_decay=0.9, metrics=["Accuracy", "ConfusionMatrix"])
    Trainer(mlp(), config, train_data=Subset(digits[0], range(128)),
            valid_data={"main": valid, "noisy": Subset(digits[1], range(64, 128))}).fit()
    report = tmp_path / "run" / "report"
    pngs = sorted(p.name for p in report.glob("*.png") if "confusion" in p.name)
    assert pngs == ["confusion_matrix.png", "metric_valid_noisy_confusion_matrix.png"]
    html = (report / "index.html").read_text()
    assert "Confusion matrix: validation set, EMA of the last weights" in html
    assert "(EMA weights)" in html
