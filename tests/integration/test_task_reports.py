"""The vision tasks' report sections, through ``Task.fit()`` on generated shapes: the page names the
section, its PNG decodes with the laid-out size, and its pixels show what the saved data says (mask
colours where the model predicts each class, green / red frames as many as right / wrong neighbours,
box outlines where the boxes are); a classification run's report has none of these sections."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from trainforge import TrainingConfig
from trainforge.data.shapes import (
    ShapesClassification,
    ShapesDetection,
    ShapesRetrieval,
    ShapesSegmentation,
    collate_detection,
)
from trainforge.models import build_model
from trainforge.report import (
    DETECTION_FILE,
    RETRIEVAL_FILE,
    SEGMENTATION_FILE,
    display_images,
    load_detection_samples,
    load_retrieval_samples,
    load_segmentation_samples,
)
from trainforge.report import tasks as task_sections
from trainforge.tasks import ClassificationTask, ObjectDetectionTask, SegmentationTask, TripletLearnTask


def _config(tmp_path, **changes):
    base = dict(max_epochs=2, batch_size=16, lr=3e-3, seed=0, output_dir=str(tmp_path), tensorboard=False,
                progress_bar=False, checkpoint=None)
    return TrainingConfig(**{**base, **changes})


def _blend(base: np.ndarray, colors: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Half the image, half the class colour, background (class 0) left as it is: what an overlaid mask
    pixel must be (computed here, apart from the drawing code)."""
    blended = np.round(0.5 * base.astype(np.float64) + 0.5 * colors[classes])
    return np.where((classes == 0)[..., None], base, blended).astype(np.int64)


def test_segmentation_report_shows_predicted_and_true_masks(tmp_path):
    train = ShapesSegmentation(96, image_size=16, seed=0)
    valid = ShapesSegmentation(12, image_size=16, seed=1)
    torch.manual_seed(0)
    model = build_model("small_cnn", {"width": 8, "depth": 2}, neck_name="UNetDecoder", head_name="SegmentationHead",
                        num_classes=len(train.classes))
    SegmentationTask(model, _config(tmp_path, max_epochs=4, lr=1e-2), train_data=train, valid_data=valid).fit()
    page = (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
    assert "Segmentation: predicted masks" in page and "segmentation_samples.png" in page
    data = load_segmentation_samples(tmp_path / SEGMENTATION_FILE)
    count = SegmentationTask.report_samples
    assert data["images"].shape == (count, 3, 16, 16) and data["class_names"] == list(train.classes)
    assert torch.equal(data["targets"], valid.masks[:count])  # the first validation images, unshuffled
    predicted = set(data["predictions"].unique().tolist())
    foreground = data["targets"] > 0
    found = (data["predictions"] > 0) & foreground
    assert len(predicted) >= 2 and found.sum() >= 0.3 * foreground.sum(), (predicted, int(found.sum()))

    png = Image.open(tmp_path / "report" / "segmentation_samples.png")
    png.load()
    scale, cell_w, cell_h = task_sections.segmentation_geometry(16, 16)
    width = 3 * cell_w
    assert png.size == (width, task_sections.HEADER + count * cell_h
                        + task_sections.legend_height(task_sections.legend_names(list(train.classes)), width))
    pixels = np.asarray(png.convert("RGB")).astype(np.int64)
    colors = np.asarray(task_sections.palette(len(train.classes)), dtype=np.float64)
    for row in range(count):
        base = np.round(data["images"][row].permute(1, 2, 0).numpy() * 255)
        base = base.repeat(scale, 0).repeat(scale, 1)
        for column, mask in ((0, None), (1, data["targets"][row]), (2, data["predictions"][row])):
            left, top = column * cell_w + task_sections.PAD, task_sections.HEADER + row * cell_h + task_sections.PAD
            panel = pixels[top:top + 16 * scale, left:left + 16 * scale]
            if mask is None:
                assert np.abs(panel - base).max() <= 1  # the plain image
                continue
            classes = mask.numpy().repeat(scale, 0).repeat(scale, 1)
            assert np.abs(panel - _blend(base, colors, classes)).max() <= 1, (row, column)
    # the legend names every class next to its swatch colour
    legend = pixels[task_sections.HEADER + count * cell_h:]
    for color in task_sections.palette(len(train.classes))[1:]:
        assert (legend == np.asarray(color)).all(-1).any(), color


TASK_TITLES = ("Segmentation: predicted masks", "Retrieval: nearest gallery neighbours", "Detection: predicted boxes")


def test_classification_report_has_no_task_sections(tmp_path):
    train = ShapesClassification(48, image_size=16, seed=0)
    torch.manual_seed(0)
    model = build_model("small_cnn", {"width": 4, "depth": 2}, pooling_name="Pooling", head_name="ClassificationHead",
                        num_classes=len(train.classes))
    ClassificationTask(model, _config(tmp_path, max_epochs=1), train_data=train, valid_data=train).fit()
    page = (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
    assert "Validation samples" in page  # the classification grids are still there
    assert not any(title in page for title in TASK_TITLES)
    assert not list((tmp_path / "report").glob("segmentation_*.png")) + list((tmp_path / "report").glob("retrieval_*"))
    assert not (tmp_path / "report" / "data" / "segmentation.pt").exists()


def test_retrieval_report_marks_each_neighbour_right_or_wrong(tmp_path):
    train = ShapesRetrieval("train", samples_per_class=24, image_size=16, seed=0)
    valid = ShapesRetrieval("valid", samples_per_class=12, queries_per_class=4, image_size=16, seed=0)
    torch.manual_seed(0)
    model = build_model("small_cnn", {"width": 8, "depth": 2}, pooling_name="GeM", head_name="LinearHead",
                        head_params={"out_channels": 16})
    task = TripletLearnTask(model, _config(tmp_path, batch_size=48), train_data=train, valid_data=valid)
    task.fit()
    page = (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
    assert "Retrieval: nearest gallery neighbours" in page and "retrieval_neighbours.png" in page
    data = load_retrieval_samples(tmp_path / RETRIEVAL_FILE)
    count, k = TripletLearnTask.report_queries, TripletLearnTask.report_neighbours
    assert data["neighbour_targets"].shape == (count, k) and data["class_names"] == list(valid.classes)

    # the saved neighbours are the model's: cosine k-NN over the gallery, computed here apart
    model.eval()
    with torch.no_grad():
        embeddings = torch.nn.functional.normalize(model(valid.images), dim=1)
    queries = valid.is_query.nonzero().squeeze(1)[:count]
    gallery = valid.is_gallery.nonzero().squeeze(1)
    best = (embeddings[queries] @ embeddings[gallery].T).topk(k, dim=1).values
    nearest = data["neighbour_indices"]
    assert torch.equal(data["query_indices"], queries) and torch.equal(data["query_targets"], valid.targets[queries])
    assert bool(valid.is_gallery[nearest].all()) and not bool((nearest == queries[:, None]).any())
    # as near as the k nearest (a near tie may swap two, as batch sizes change the last float bits)
    similarity = (embeddings[queries][:, None] * embeddings[nearest]).sum(-1)
    assert torch.allclose(similarity, best, atol=1e-4)
    assert torch.equal(data["neighbour_targets"], valid.targets[nearest])
    shown = display_images(valid.images[nearest].flatten(0, 1)).reshape(count, k, 3, 16, 16)
    assert torch.allclose(data["neighbour_images"], shown) and torch.allclose(
        data["query_images"], display_images(valid.images[queries]))
    correct = valid.targets[nearest] == valid.targets[queries][:, None]
    assert torch.equal(data["correct"], correct)
    right = int(correct.sum())
    assert 0 < right < count * k  # both frames are drawn
    assert f"{right} of {count * k} neighbours shown are right" in page

    png = Image.open(tmp_path / "report" / "retrieval_neighbours.png")
    png.load()
    _, cell_w, cell_h = task_sections.retrieval_geometry(16, 16)
    assert png.size == ((k + 1) * cell_w, count * cell_h)
    pixels = np.asarray(png.convert("RGB"))
    frames = {"query": 0, "right": 0, "wrong": 0}
    colors = {"query": task_sections.QUERY_COLOR, "right": task_sections.RIGHT_COLOR,
              "wrong": task_sections.WRONG_COLOR}
    for row in range(count):
        for column in range(k + 1):
            left, top = column * cell_w + task_sections.PAD, row * cell_h + task_sections.PAD
            frame = tuple(int(v) for v in pixels[top + 1, left + 1])  # inside the frame, outside the image
            kind = next(name for name, color in colors.items() if frame == color)
            frames[kind] += 1
            if column:
                assert kind == ("right" if correct[row, column - 1] else "wrong"), (row, column)
    assert frames == {"query": count, "right": right, "wrong": count * k - right}


def test_detection_report_draws_predicted_and_true_boxes(tmp_path):
    train, valid = ShapesDetection(48, image_size=32, seed=0), ShapesDetection(8, image_size=32, seed=1)
    torch.manual_seed(0)
    model = build_model("small_resnet", {"width": 8, "depth": 3}, head_name="FCOSHead", head_params={"image_size": 32},
                        num_classes=len(train.classes))
    task = ObjectDetectionTask(model, _config(tmp_path, batch_size=8, eval_strategy="no"),
                               train_data=DataLoader(train, batch_size=8, shuffle=True, collate_fn=collate_detection),
                               valid_data=DataLoader(valid, batch_size=8, collate_fn=collate_detection))
    task.report_score_threshold = 0.05  # two short epochs: scores are still low
    task.fit()
    page = (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
    assert "Detection: predicted boxes" in page and "detection_samples.png" in page
    data = load_detection_samples(tmp_path / DETECTION_FILE)
    count = ObjectDetectionTask.report_samples
    assert data["images"].shape == (count, 3, 32, 32) and data["score_threshold"] == 0.05
    for index in range(count):
        assert torch.equal(data["true_boxes"][index], valid.targets[index]["boxes"])
        scores = data["pred_scores"][index]
        assert bool((scores >= 0.05).all()) and torch.equal(scores, scores.sort(descending=True).values)
        assert len(scores) <= 10  # the best ten of each image
    predicted = sum(len(b) for b in data["pred_boxes"])
    assert predicted > 0 and f"{predicted} predicted and" in page

    png = Image.open(tmp_path / "report" / "detection_samples.png")
    png.load()
    scale, cell_w, cell_h = task_sections.detection_geometry(32, 32)
    columns = task_sections.DETECTION_COLUMNS
    assert png.size == (columns * cell_w, -(-count // columns) * cell_h)
    pixels = np.asarray(png.convert("RGB"))

    def bottom_edge(index, box):
        """The pixels of a box's bottom outline in the grid."""
        left, top = (index % columns) * cell_w + task_sections.PAD, (index // columns) * cell_h + task_sections.PAD
        x0, _, x1, y1 = (min(max(round(float(v) * scale), 0), 32 * scale) for v in box)
        return pixels[top + max(y1 - 1, 0), left + x0:left + max(x1, x0 + 1)]

    def share(edge, *colors):
        return float(np.stack([(edge == np.asarray(c)).all(-1) for c in colors]).any(0).mean())

    white = (255, 255, 255)  # the labels' background
    magenta, green = task_sections.PRED_BOX_COLOR, task_sections.TRUE_BOX_COLOR
    pred_edges = [bottom_edge(i, box) for i in range(count) for box in data["pred_boxes"][i]]
    true_edges = [bottom_edge(i, box) for i in range(count) for box in data["true_boxes"][i]]
    assert pred_edges and true_edges
    # predicted boxes are drawn over the true ones, only their labels (magenta on white) over them
    assert min(share(edge, magenta, white) for edge in pred_edges) == 1.0
    assert np.mean([share(edge, magenta) for edge in pred_edges]) > 0.5
    assert min(share(edge, green, magenta, white) for edge in true_edges) == 1.0
    assert np.mean([share(edge, green) for edge in true_edges]) > 0.2  # two-epoch predictions cover many


def test_damaged_or_malicious_task_data_fails_only_its_section(tmp_path):
    from trainforge.loggers import JsonlLogger
    from trainforge.report import build_report, save_segmentation_samples

    with JsonlLogger(tmp_path / "metrics.jsonl") as logger:
        logger.log_metrics({"train/loss": 1.0}, step=1)
    path = save_segmentation_samples(tmp_path, torch.rand(2, 3, 8, 8), torch.zeros(2, 8, 8), torch.ones(2, 8, 8),
                                     ["background", "circle"], 2)
    data = torch.load(path, weights_only=True)
    data["predictions"] = torch.zeros(2, 4, 4, dtype=torch.long)  # the wrong size
    torch.save(data, path)
    with pytest.warns(UserWarning, match="segmentation"):
        page = build_report(tmp_path).read_text(encoding="utf-8")
    assert "segmentation (failed)" in page and "segmentation.pt" in page and "predictions must be" in page
    assert "Summary" in page  # the rest of the report is built
    with pytest.raises(ValueError, match=r"segmentation\.pt"):
        build_report(tmp_path, strict=True)
    path.unlink()

    class Planted:  # a pickle that would run code when loaded without weights_only
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    torch.save({"images": Planted()}, tmp_path / RETRIEVAL_FILE)
    with pytest.warns(UserWarning, match="retrieval"):
        page = build_report(tmp_path).read_text(encoding="utf-8")
    assert "retrieval (failed)" in page and "Weights only load failed" in page
    assert not (tmp_path / "pwned").exists()
