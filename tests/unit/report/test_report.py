from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from xml.etree import ElementTree

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
SVG = "{http://www.w3.org/2000/svg}"
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


def test_every_reference_exists_and_every_figure_is_valid(classification_run):
    run, page = classification_run
    assert page == run / "report" / "index.html"
    parser = References()
    parser.feed(page.read_text(encoding="utf-8"))
    files = [ref for ref in parser.references if not ref.startswith("#")]
    assert not [ref for ref in files if "://" in ref or ref.startswith("//")]  # nothing from the network
    for ref in files:
        assert (page.parent / ref).is_file(), ref
    svgs = [ref for ref in files if ref.endswith(".svg")]
    assert set(files) == {*svgs, "data/curves.json"}  # every figure is an SVG
    assert {"curve_loss.svg", "curve_accuracy.svg", "lr_learning_rate.svg", "confusion_matrix.svg", "per_class.svg",
            "throughput_samples_per_s.svg", "other_grad_norm.svg", "samples_best.svg", "samples_worst.svg",
            "samples_confused.svg"} <= set(svgs)
    for svg in svgs:
        root = ElementTree.parse(page.parent / svg).getroot()  # well-formed XML
        assert root.tag == f"{SVG}svg" and float(root.get("width")) > 100 and root.find(f"{SVG}title").text
        for image in root.iter(f"{SVG}image"):  # embedded pictures are whole PNGs, nothing fetched
            assert _embedded_png(image).format == "PNG"
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
    assert curves["figures"]["curve_accuracy.svg"] == ["valid/accuracy", "valid_noisy/accuracy"]
    assert sorted(curves["figures"]["curve_loss.svg"]) == ["train/loss", "valid/loss"]
    assert "global_step" not in series  # counters are not plotted


def _embedded_png(element) -> Image.Image:
    import base64
    import io

    head, _, data = element.get("href").partition(",")
    assert head == "data:image/png;base64"
    raw = base64.b64decode(data)
    assert raw[:8] == PNG_MAGIC
    image = Image.open(io.BytesIO(raw))
    image.load()
    return image


def _texts(root) -> list[str]:
    return ["".join(element.itertext()) for element in root.iter(f"{SVG}text")]


def _points(group) -> list[tuple[float, float]]:
    return [tuple(map(float, point.split(","))) for line in group.iter(f"{SVG}polyline")
            for point in line.get("points").split()]


def test_svg_curves_draw_every_logged_point_in_place_with_title_and_axis_labels(classification_run):
    run, _ = classification_run
    curves = json.loads((run / "report" / "data" / "curves.json").read_text())["series"]
    root = ElementTree.parse(run / "report" / "curve_loss.svg").getroot()
    texts = _texts(root)
    assert {"loss", "step", "train/loss", "valid/loss"} <= set(texts)  # title and y label, x label, legend
    groups = {g.get("data-label"): g for g in root.iter(f"{SVG}g") if g.get("class") == "series"}
    assert set(groups) == {"train/loss", "valid/loss"}
    # the pixels are one affine map of (step, value) for every point of both lines: read it off train/loss
    steps, values = curves["train/loss"]["steps"], curves["train/loss"]["values"]
    pixels = _points(groups["train/loss"])
    assert len(pixels) == len(steps) == 25
    (x0, y0), (x1, y1) = pixels[0], pixels[-1]
    x_of = lambda step: x0 + (step - steps[0]) * (x1 - x0) / (steps[-1] - steps[0])  # noqa: E731
    y_of = lambda value: y0 + (value - values[0]) * (y1 - y0) / (values[-1] - values[0])  # noqa: E731
    for (x, y), step, value in zip(pixels, steps, values):
        assert x == pytest.approx(x_of(step), abs=0.11) and y == pytest.approx(y_of(value), abs=0.11)
    assert y1 > y0  # the loss falls: lower on the page (SVG's y grows downwards)
    valid = curves["valid/loss"]
    drawn = _points(groups["valid/loss"])
    assert len(drawn) == 2
    for (x, y), step, value in zip(drawn, valid["steps"], valid["values"]):
        assert x == pytest.approx(x_of(step), abs=0.11) and y == pytest.approx(y_of(value), abs=0.11)
    markers = list(groups["valid/loss"].iter(f"{SVG}circle"))  # few points: each one marked
    assert len(markers) == 2


def test_svg_confusion_matrix_has_every_count_class_names_and_the_weights(classification_run, digits_model):
    run, _ = classification_run
    matrix, names = digits_model[3], digits_model[4]
    root = ElementTree.parse(run / "report" / "confusion_matrix.svg").getroot()
    cells = [c for c in root.iter(f"{SVG}rect") if c.get("class") == "cell"]
    drawn = {(c.get("data-true"), c.get("data-predicted")): int(c.get("data-count")) for c in cells}
    assert drawn == {(names[t], names[p]): int(matrix[t, p]) for t in range(10) for p in range(10)}
    texts = _texts(root)
    assert all(texts.count(name) == 2 for name in names)  # on the rows and on the columns
    assert "predicted" in texts and "true" in texts and "fraction of the true class" in texts
    assert "confusion matrix: validation set, final weights" in texts
    shade = {(c.get("data-true"), c.get("data-predicted")): c.get("fill") for c in cells}
    assert shade[names[0], names[0]] != shade[names[0], names[1]]  # the diagonal is darker than an empty cell
    assert str(int(matrix[3, 3])) in texts  # counts are written in the cells


def test_svg_per_class_bars_are_the_scores(classification_run, digits_model):
    run, _ = classification_run
    matrix, names = digits_model[3], digits_model[4]
    scores = per_class_scores(matrix)
    root = ElementTree.parse(run / "report" / "per_class.svg").getroot()
    bars = {(b.get("data-group"), b.get("data-category")): float(b.get("data-value"))
            for b in root.iter(f"{SVG}rect") if b.get("class") == "bar"}
    for group, key in (("precision", "precision"), ("recall", "recall"), ("F1", "f1")):
        for index, name in enumerate(names):
            assert bars[group, name] == pytest.approx(float(scores[key][index]), rel=1e-5)
    assert {"class", "score", "precision", "recall", "F1", *names} <= set(_texts(root))


def test_sample_grids_show_the_chosen_samples_captioned_and_coloured(classification_run, digits_model):
    run, _ = classification_run
    images, targets, probs, _, names = digits_model
    root = ElementTree.parse(run / "report" / "samples_worst.svg").getroot()
    samples = [g for g in root.iter(f"{SVG}g") if g.get("class") == "sample"]
    assert len(samples) == 16
    true_prob = probs[:64].gather(1, targets[:64, None]).squeeze(1)
    worst = true_prob.argsort()[:16]  # what the section picks, in its order
    for group, index in zip(samples, worst.tolist()):
        picture = _embedded_png(next(group.iter(f"{SVG}image")))
        assert picture.size == (96, 96)  # 8x8 digits upscaled by whole pixels, sharp
        pixels = torch.from_numpy(np.asarray(picture.convert("L"))[::12, ::12].copy()).float() / 255
        shown = images[index, 0]
        shown = (shown - shown.min()) / (shown.max() - shown.min())
        assert torch.allclose(pixels, shown, atol=1 / 255 + 1e-6)  # the very sample, scaled to [0, 1]
        caption = _texts(group)
        predicted = int(probs[index].argmax())
        assert caption[0] == f"true {names[int(targets[index])]}"
        assert caption[1] == f"pred {names[predicted]} {float(probs[index, predicted]):.2f}"
        right = predicted == int(targets[index])
        assert group.get("data-correct") == str(right).lower()
        assert {t.get("fill") for t in group.iter(f"{SVG}text")} == {"#008000" if right else "#c80000"}


def test_svg_charts_of_odd_data():
    from trainforge.report.svg import confusion_matrix_svg, line_chart

    # NaN breaks the line, a log scale for a loss over decades, a label that needs escaping
    svg = line_chart("<loss>", {"a&b": ([1, 2, 3, 4, 5], [100.0, float("nan"), 1.0, 0.1, 0.01])}, log_y=True)
    root = ElementTree.fromstring(svg)
    group = next(g for g in root.iter(f"{SVG}g") if g.get("class") == "series")
    assert group.get("data-label") == "a&b" and len(list(group.iter(f"{SVG}polyline"))) == 1  # [100] alone, then 3
    assert len(list(group.iter(f"{SVG}circle"))) == 4
    assert {"0.01", "0.1", "1", "10", "100"} <= set(_texts(root)) and "<loss>" in _texts(root)
    # an empty line and a constant one still give a valid chart
    ElementTree.fromstring(line_chart("empty", {"x": ([], [])}))
    ElementTree.fromstring(line_chart("flat", {"x": ([1, 2], [3.0, 3.0])}))
    # many classes: the cells are one embedded image, the names thinned out, the file stays small
    big = confusion_matrix_svg(torch.eye(200, dtype=torch.long), [f"c{i}" for i in range(200)])
    root = ElementTree.fromstring(big)
    assert not [c for c in root.iter(f"{SVG}rect") if c.get("class") == "cell"]
    assert next(root.iter(f"{SVG}image")).get("href").startswith("data:image/png;base64,")
    assert len(big) < 50_000 and "c0" in _texts(root) and 40 <= len(_texts(root)) < 120


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
    assert "curve_loss.svg" in html and "confusion_matrix.svg" not in html
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
    figures = sorted(p.name for p in report.iterdir() if "confusion" in p.name)
    assert figures == ["confusion_matrix.svg", "metric_valid_noisy_confusion_matrix.svg"]
    html = (report / "index.html").read_text()
    assert "Confusion matrix: validation set, EMA of the last weights" in html
    assert "(EMA weights)" in html


def _samples_of(model, valid, tmp, batch_size):
    """The report's samples computed by hand: one pass of ``model`` over ``valid`` in order."""
    from trainforge.report import save_classification_samples

    model.eval()
    with torch.no_grad():
        batches = [(x, y, model(x).float().softmax(-1)) for x, y in torch.utils.data.DataLoader(valid, batch_size)]
    save_classification_samples(tmp, batches, [str(i) for i in range(10)])
    return load_classification_data(tmp / CLASSIFICATION_FILE)


@pytest.mark.parametrize("best_differs", [False, True])
def test_report_samples_reuse_the_final_evaluation_unless_the_weights_changed(tmp_path, digits, best_differs):
    """The report's samples come from the last epoch's evaluation when the model still holds the weights it
    evaluated (no second pass over the validation set); when the best checkpoint's (different) weights are
    loaded at the end, the report makes its own pass with them. Either way they equal a pass by hand."""
    from helpers import cfg, mlp
    from torch.utils.data import Subset

    from trainforge import Trainer

    train, valid = Subset(digits[0], range(256)), Subset(digits[1], range(96))
    # monitoring the *highest* loss makes the first epoch the best one: its weights differ from the last
    checkpoint = {"monitor": "valid/loss", "mode": "max"} if best_differs else None
    config = cfg(tmp_path, report=True, max_epochs=3, batch_size=32, checkpoint=checkpoint,
                 load_best_model_at_end=best_differs)
    model = mlp()
    calls = []
    model.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    trainer = Trainer(model, config, train_data=train, valid_data=valid)
    trainer.fit()
    valid_passes = sum(calls) - 3 * len(train)  # samples seen in eval mode, in units of the validation set
    saved = load_classification_data(tmp_path / "run" / CLASSIFICATION_FILE)
    expected = _samples_of(model, valid, tmp_path / "by_hand", 32)
    for key in ("images", "targets", "probs", "confusion_matrix"):
        assert saved[key].shape == expected[key].shape, key
        assert torch.allclose(saved[key].double(), expected[key].double(), atol=1e-6), key
    if best_differs:
        assert saved["weights"] == "best checkpoint weights"
        assert trainer.checkpoint_callback.best_model_path.name.startswith("epoch001")
        assert valid_passes == 4 * len(valid)  # 3 evaluations and the report's own pass
    else:
        assert saved["weights"] == "last weights"
        assert valid_passes == 3 * len(valid)  # the 3 evaluations only


def test_a_default_fit_and_its_report_draw_no_matplotlib_figure(tmp_path, digits, monkeypatch):
    """The report's charts are SVG written directly: drawing matplotlib figures was most of a default
    fit's fixed cost (issue #9). Every default on (metrics, TensorBoard, checkpoints, report)."""
    from matplotlib.figure import Figure
    from torch.utils.data import Subset

    from trainforge import Trainer, TrainingConfig
    from trainforge.models import SmallCNN

    created = []
    original = Figure.__init__

    def counting(self, *args, **kwargs):
        created.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "__init__", counting)
    config = TrainingConfig(max_epochs=1, batch_size=64, output_dir=str(tmp_path / "run"), device="cpu")
    Trainer(SmallCNN(in_channels=1, num_classes=10), config, train_data=Subset(digits[0], range(256)),
            valid_data=Subset(digits[1], range(96))).fit()
    assert (tmp_path / "run" / "report" / "confusion_matrix.svg").is_file()  # the report was built
    assert created == []
