"""Detection: the FCOS targets, the KD terms and mAP against hand values; boxes moving with their
images; slices merged so that an object cut by a slice edge is found once; the ONNX graph with
NMS inside agreeing with PyTorch."""

from __future__ import annotations

import math

import pytest
import torch

from edgekd.distill.detection import assign, detection_loss, head_kd_loss, ld_loss, pseudo_boxes, soft_map_kd
from edgekd.distill.losses import KDInputs, KDSettings, combined_loss
from edgekd.errors import ConfigError
from edgekd.models.arch import ArchSpec
from edgekd.models.detnet import GFL_BINS, capturing_edges, decode, edge_bins, layout, locations, points
from edgekd.models.sources import build_student
from edgekd.tasks.detection import DetectionTask, coco_metrics, merge, predict_frame


def raw_with(size: int, k: int, objects: list[tuple[int, list[float]]], sure: float = 8.0) -> torch.Tensor:
    """Raw outputs 1 x A x (K + 5) that decode to `objects` (class, box): at the stride-8 location
    nearest each box's centre a class logit `sure`, the side distances, a sure centre-ness;
    everything else a logit of -8."""
    out = torch.full((1, locations(size), k + 5), -8.0)
    centres, strides = points(size)
    for c, (x1, y1, x2, y2) in objects:
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        i = int(((centres - torch.tensor([cx, cy])) ** 2).sum(1)[:(size // 8) ** 2].argmin())
        px, py = centres[i].tolist()
        s = float(strides[i])
        out[0, i, c] = sure
        out[0, i, k:k + 4] = torch.log(torch.tensor([px - x1, py - y1, x2 - px, y2 - py]) / s)
        out[0, i, k + 4] = sure
    return out


def test_the_output_layout_round_trips():
    assert locations(64) == 64 + 16 + 4 and layout(84) == 64
    assert layout(locations(320)) == 320
    with pytest.raises(ValueError):
        layout(85)


def test_decoding_gives_the_boxes_the_rows_encode():
    out = raw_with(64, 3, [(2, [10.0, 12.0, 30.0, 20.0])])
    boxes, scores = decode(out)
    best = int(scores[0].max(1).values.argmax())
    assert torch.allclose(boxes[0, best], torch.tensor([10.0, 12.0, 30.0, 20.0]), atol=1e-4)
    assert int(scores[0, best].argmax()) == 2
    assert float(scores[0, best, 2]) == pytest.approx(1 / (1 + math.exp(-8)), rel=1e-5)  # sqrt(p * p)


def test_detections_encoded_as_rows_decode_back():
    """A boxes-only teacher's detections become rows: decoding and NMS give them back."""
    from edgekd.models.detnet import encode, select

    boxes = torch.tensor([[10.0, 10.0, 30.0, 22.0], [100.0, 90.0, 220.0, 200.0], [5.0, 5.0, 9.0, 8.0]])
    rows = encode(boxes, torch.tensor([0.9, 0.6, 0.3]), torch.tensor([1, 0, 2]), 256, 3)
    b, s, c = select(*(t[0] for t in decode(rows[None])), 0.1, 0.6, 10)
    assert c.tolist() == [1, 0, 2] and s.tolist() == pytest.approx([0.9, 0.6, 0.3], abs=1e-4)
    assert torch.allclose(b[:2], boxes[:2], atol=1e-3)  # a location inside each: exact
    # 4 x 3 px, between the stride-8 locations (4, 12): its near sides move to half a pixel from (4, 4)
    assert b[2].tolist() == pytest.approx([3.5, 3.5, 9.0, 8.0], abs=1e-3)


def test_fcos_targets_of_a_hand_placed_box():
    # a 32 x 16 box centred at (24, 16): stride-8 centres 20, 28 (x) and 12, 20 (y) lie inside it and
    # within 1.5 strides of its centre; no stride-16 centre lies strictly inside in y; at stride 32
    # its largest side distance (24) is below the level's range (128+)
    y = torch.tensor([[[1.0, 8.0, 8.0, 40.0, 24.0]]])
    cls_t, box_t, pos = assign(y, 64, 3)
    centres, _ = points(64)
    assert int(pos.sum()) == 4
    assert sorted(map(tuple, centres[pos[0]].tolist())) == [(20.0, 12.0), (20.0, 20.0), (28.0, 12.0), (28.0, 20.0)]
    assert (cls_t[pos].argmax(1) == 1).all() and float(cls_t[pos].sum()) == 4
    assert torch.allclose(box_t[pos], torch.tensor([8.0, 8.0, 40.0, 24.0]).expand(4, 4))


def test_soft_class_maps_against_hand_values():
    zero = torch.zeros(1, 2, 1)
    # one class, student and teacher at 0: BCE(0.5, 0.5) = log 2, times tau^2
    assert float(soft_map_kd(zero, zero, torch.tensor([[1.0, 1.0]]), 1.0)) == pytest.approx(math.log(2))
    assert float(soft_map_kd(zero, zero, torch.tensor([[1.0, 1.0]]), 2.0)) == pytest.approx(4 * math.log(2))
    # the weights pick the locations: only the first counts (student logit 2 vs teacher 0 at tau 1)
    s = torch.tensor([[[2.0], [-5.0]]])
    want = 0.5 * math.log(1 + math.exp(-2)) + 0.5 * math.log(1 + math.exp(2))
    assert float(soft_map_kd(s, zero, torch.tensor([[1.0, 0.0]]), 1.0)) == pytest.approx(want)


def test_head_kd_is_the_supervised_loss_at_alpha_one_and_shrinks_toward_the_teacher():
    y = torch.tensor([[[0.0, 8.0, 8.0, 40.0, 24.0]]])
    teacher = raw_with(64, 2, [(0, [8.0, 8.0, 40.0, 24.0])])
    student = torch.zeros_like(teacher)
    assert float(head_kd_loss(student, teacher, y, 1.0, 2.0)) == pytest.approx(float(detection_loss(student, y)))
    near = 0.8 * teacher + 0.2 * student
    assert float(head_kd_loss(near, teacher, y, 0.0, 2.0)) < float(head_kd_loss(student, teacher, y, 0.0, 2.0))
    b = KDInputs(student_logits=student, labels=y, teacher_logits=[teacher])
    assert float(combined_loss([("head", 1.0)], b, KDSettings(alpha=1.0))) == pytest.approx(
        float(detection_loss(student, y)))


def test_pseudo_boxes_add_what_the_labels_miss():
    y = torch.tensor([[[0.0, 8.0, 8.0, 40.0, 24.0], [-1.0, -1.0, -1.0, -1.0, -1.0]]])
    teacher = raw_with(64, 2, [(0, [9.0, 8.0, 40.0, 24.0]), (1, [40.0, 40.0, 60.0, 60.0])])
    out = pseudo_boxes(teacher, y)
    rows = out[0][out[0, :, 0] >= 0]
    assert len(rows) == 2  # the labelled box, and the teacher's second object; its copy of the first is not added
    assert rows[1, 0] == 1 and torch.allclose(rows[1, 1:], torch.tensor([40.0, 40.0, 60.0, 60.0]), atol=1e-3)


def test_map_of_a_hand_computed_case():
    # two true boxes; detections: a hit (0.9), a miss (0.8), a hit (0.7): precision 1, 1/2, 2/3 at
    # recall 1/2, 1/2, 1. COCO's 101-point interpolation: precision 1 up to recall 0.50 (51 points),
    # then 2/3 (50 points): AP = (51 + 50 * 2/3) / 101, at every IoU threshold (the hits are exact)
    y = torch.tensor([[[0.0, 0.0, 0.0, 10.0, 10.0], [0.0, 20.0, 20.0, 30.0, 30.0]]])
    dets = [(torch.tensor([[0.0, 0.0, 10.0, 10.0], [40.0, 40.0, 50.0, 50.0], [20.0, 20.0, 30.0, 30.0]]),
             torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 0, 0]))]
    m = coco_metrics(dets, y, ["car"])
    want = (51 + 50 * 2 / 3) / 101
    assert m["map50"] == pytest.approx(want, abs=1e-6) and m["map"] == pytest.approx(want, abs=1e-6)
    assert m["per_class"] == [pytest.approx(want, abs=1e-6)] and m["map_large"] == -1.0  # no large object
    # a detection inside a crowd region is ignored, not a false positive
    crowd = torch.cat([y, torch.tensor([[[-2.0, 38.0, 38.0, 52.0, 52.0]]])], 1)
    assert coco_metrics(dets, crowd, ["car"])["map50"] == pytest.approx(1.0)


def test_boxes_move_with_their_images():
    """A bright block and its box: after flips, quarter turns and crops the box still frames the block."""
    x = torch.zeros(6, 1, 64, 64)
    x[:, :, 10:20, 30:50] = 1.0
    y = torch.tensor([[[0.0, 30.0, 10.0, 50.0, 20.0]]]).repeat(6, 1, 1)
    task = DetectionTask()
    xa, ya = task.augment(x, y, torch.Generator().manual_seed(3), ("flip", "rot90"))
    for img, box in zip(xa, ya):
        rows, cols = torch.nonzero(img[0] > 0.5, as_tuple=True)
        assert box[0, 1:].tolist() == [float(cols.min()), float(rows.min()), float(cols.max() + 1),
                                       float(rows.max() + 1)]
    xc, yc = task.augment(x, y, torch.Generator().manual_seed(5), ("crop",))
    for img, box in zip(xc, yc):
        if box[0, 0] < 0:
            continue  # the crop left less than half the block: no longer a target
        rows, cols = torch.nonzero(img[0] > 0.5, as_tuple=True)
        assert abs(box[0, 1] - cols.min()) <= 2 and abs(box[0, 4] - (rows.max() + 1)) <= 2


def test_an_object_cut_by_a_slice_edge_is_found_once():
    """Slices of a 128 px frame at 64 px overlapping by 32: an object on the edge of two slices is
    seen whole by one and in part by another; merging keeps one detection."""

    class Bright(torch.nn.Module):
        """Detects the bright block of its input: one sure row at the block, its box exact."""

        def forward(self, x):
            mask = x[0, 0] > 0.5
            if not mask.any():
                return torch.full((1, locations(x.shape[-1]), 6), -8.0)
            rows, cols = torch.nonzero(mask, as_tuple=True)
            box = [float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)]
            return raw_with(x.shape[-1], 1, [(0, box)])

    frame = torch.zeros(1, 128, 128)
    frame[0, 40:56, 56:72] = 1.0  # x 56..72: across the edge of the first slice (0..64)
    boxes, scores, labels, slices = predict_frame(Bright(), frame, 64, tile=64, overlap=32)
    assert slices == 9 and len(boxes) == 1
    assert torch.allclose(boxes[0], torch.tensor([56.0, 40.0, 72.0, 56.0]), atol=1e-3)
    # two objects side by side stay two; a part of the first merges into it; another class stays apart
    b, s, c = merge(torch.tensor([[0.0, 0, 10, 10], [12.0, 0, 22, 10], [0.0, 0, 6, 12], [0.0, 0, 10, 10]]),
                    torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([0, 0, 0, 1]))
    assert b.tolist() == [[0, 0, 10, 12], [12, 0, 22, 10], [0, 0, 10, 10]] and c.tolist() == [0, 0, 1]
    assert s.tolist() == pytest.approx([0.9, 0.8, 0.6])


@pytest.mark.parametrize("head", ["fcos", "gfl"])
def test_the_graph_with_nms_inside_agrees_with_pytorch(tmp_path, head):
    import onnx

    from edgekd.export.detection import check_nms_export, export_with_nms, nms_metadata

    torch.manual_seed(0)
    model, _ = build_student(ArchSpec(width=0.5), 3, 2, [0.5] * 3, [0.25] * 3, task="detection", det_head=head)
    path = export_with_nms(model, tmp_path / "d.onnx", 3, 64, nms_metadata(["car", "ship"], 64, 0.05, 0.6, 20),
                           0.05, 0.6, 20)
    agreement = check_nms_export(model, path, torch.rand(4, 3, 64, 64), 0.05, 0.6, 20)
    assert agreement.torch_boxes > 0 and agreement.agrees and agreement.mean_iou > 0.999
    proto = onnx.load(str(path))
    assert [o.name for o in proto.graph.output] == ["boxes", "scores", "labels"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["classes"] == "car,ship" and meta["input_size"] == "64" and "pad right and bottom" in meta["letterbox"]
    assert meta["score_threshold"] == "0.05" and meta["max_detections"] == "20"


@pytest.mark.parametrize("head", ["fcos", "gfl"])
def test_a_detector_cut_from_the_teacher_keeps_its_outputs_and_reloads(head):
    """Encoder, neck and head cut to half their channels by Taylor importance on the FCOS loss;
    the class, box and centre-ness convolutions and the level scales kept whole (a GFL-style
    head's side distributions too: LD still applies); the plan replays."""
    from edgekd.models.shrink import cut_from_teacher
    from edgekd.models.sources import rebuild

    torch.manual_seed(0)
    teacher, _ = build_student(ArchSpec(width=1.0, depth=2), 3, 3, [0.5] * 3, [0.2] * 3, task="detection",
                               det_head=head)
    x = torch.rand(8, 3, 64, 64)
    y = torch.tensor([[[0.0, 8.0, 8.0, 40.0, 24.0]]]).repeat(8, 1, 1)
    cut = cut_from_teacher(teacher, x, 3, keep=0.5, importance="taylor", loss=lambda out: detection_loss(out, y))
    params = dict(cut.named_parameters())
    assert sum(p.numel() for p in params.values()) < 0.4 * sum(p.numel() for p in teacher.parameters())
    assert cut.eval()(x).shape == teacher.eval()(x).shape == (8, locations(64), 3 + 5)
    assert params["inner.inner.head.scales"].shape == (3,)
    sides = 4 if head == "fcos" else 4 * (GFL_BINS + 1)
    assert params["inner.inner.head.box.weight"].shape[0] == sides
    assert params["inner.inner.head.ctr.weight"].shape[0] == 1
    again = rebuild(cut.source, [0.5] * 3, [0.2] * 3)  # type: ignore[attr-defined]
    again.load_state_dict(cut.state_dict())
    assert torch.allclose(again.eval()(x), cut(x), atol=1e-5) and edge_bins(again) == edge_bins(teacher)


def test_a_torchvision_detector_from_a_factory_teaches_by_its_boxes():
    """A factory returning a torchvision detector (its eval forward gives per-image detections):
    wrapped so its detections are rows; the run then distils it by pseudo-boxes only."""
    from edgekd.models.detnet import boxes_only
    from edgekd.models.sources import SourceRequest, load_model

    req = SourceRequest(4, 3, [0.0] * 4, [1.0] * 4, task="detection", image_size=64, normalization="none")
    loaded = load_model("tests.models.factory_models:tv_fcos", req)
    assert boxes_only(loaded.model)
    rows = loaded.model(torch.rand(2, 4, 64, 64))
    assert rows.shape == (2, locations(64), 3 + 5)
    boxes, scores = decode(rows)
    assert float(scores.max()) > 0  # its detections are there, decoded back


def test_fgd_weighting_splits_foreground_and_background_against_hand_values():
    """A 4 x 4 map of a 4 px image, one box over the two top-left positions: they share 1/2
    (4 each, times the 16 positions), the 14 others the other 1/2 (16/28 each); mean 1."""
    from edgekd.distill.losses import box_mask, feature_kd_loss

    boxes = torch.tensor([[[0.0, 0.0, 0.0, 2.0, 1.0]], [[-1.0] * 5]])
    m = box_mask(boxes, (4, 4), 4)
    assert m[0, 0, :2].tolist() == [4.0, 4.0] and float(m[0, 3, 3]) == pytest.approx(16 / 28)
    assert float(m[0].mean()) == pytest.approx(1.0) and torch.allclose(m[1], torch.ones(4, 4))  # no box: plain
    # the student differs from the teacher by 1 at one foreground position only: mse 1 x 4 / 16 in image 0
    t = torch.zeros(2, 1, 4, 4)
    s = t.clone()
    s[0, 0, 0, 0] = 1.0
    adapter = torch.nn.ModuleList([torch.nn.Identity()])
    got = feature_kd_loss([s], [t], adapter, importance="boxes", boxes=boxes, image_size=4)  # type: ignore[arg-type]
    assert float(got) == pytest.approx(4 / 32)  # mean over both images' 16 positions


def test_cwd_on_neck_levels_is_the_channel_wise_kl_through_the_adapters():
    """--feature-distance cwd: per level, tau^2 x the mean over channels of KL(softmax over the
    teacher's positions || the adapted student's), summed over the levels; 0 where they agree."""
    from edgekd.distill.losses import channel_wise_kd_loss, feature_kd_loss

    s = [torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]]), torch.zeros(1, 1, 1, 1)]
    t = [torch.tensor([[[[3.0, 2.0], [1.0, 0.0]]]]), torch.zeros(1, 1, 1, 1)]
    tau = 2.0
    p_t, log_p_s = torch.softmax(t[0].flatten() / tau, 0), torch.log_softmax(s[0].flatten() / tau, 0)
    hand = tau**2 * float((p_t * (p_t.log() - log_p_s)).sum())  # the second level: one position, KL 0
    adapters = torch.nn.ModuleList([torch.nn.Identity(), torch.nn.Identity()])
    got = feature_kd_loss(s, t, adapters, distance="cwd", temperature=tau)  # type: ignore[arg-type]
    assert float(got) == pytest.approx(hand, rel=1e-6)
    assert float(got) == pytest.approx(float(channel_wise_kd_loss(s[0], t[0], tau)), rel=1e-6)
    assert float(feature_kd_loss(t, t, adapters, distance="cwd", temperature=tau)) == pytest.approx(0.0, abs=1e-7)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="weighs no positions"):
        feature_kd_loss(s, t, adapters, distance="cwd", importance="attention")  # type: ignore[arg-type]


def test_the_nms_graph_builds_a_tensorrt_engine_or_says_why_not(tmp_path):
    """Where TensorRT runs (a GPU session, the Jetson image) the NMS graph becomes an FP16 engine;
    here the function says why it cannot, naming where to build it."""
    from edgekd.export.detection import export_with_nms, nms_engine, nms_metadata
    from edgekd.profilers.tensorrt import unavailable_reason

    model, _ = build_student(ArchSpec(width=0.25), 3, 2, [0.5] * 3, [0.25] * 3, task="detection")
    graph = export_with_nms(model, tmp_path / "d.nms.onnx", 3, 64, nms_metadata(["a", "b"], 64, 0.05, 0.6, 20),
                            0.05, 0.6, 20)
    engine, note = nms_engine(graph, 3, 64)
    if unavailable_reason() is not None:
        assert engine is None and "build it on the board" in note
    else:  # pragma: no cover - needs an NVIDIA GPU with TensorRT
        assert engine is not None and engine.stat().st_size > 0 and "TensorRT" in note


def test_the_gfl_head_gives_each_side_the_expectation_of_its_distribution_and_reloads():
    """--det-head gfl: each side 17 logits over 0..16 strides; the outputs keep FCOS's layout, the
    box channels the log of each distribution's expected distance; the record rebuilds the head."""
    from edgekd.models.sources import rebuild

    torch.manual_seed(0)
    model, _ = build_student(ArchSpec(width=0.5), 3, 2, [0.5] * 3, [0.25] * 3, task="detection", det_head="gfl")
    model.eval()
    x = torch.rand(2, 3, 64, 64)
    with capturing_edges(model) as cap:
        out = model(x)
        edges = cap.edges()
    assert edge_bins(model) == GFL_BINS and out.shape == (2, locations(64), 2 + 5)
    assert edges.shape == (2, locations(64), 4, GFL_BINS + 1)
    expected = (edges.softmax(-1) * torch.arange(GFL_BINS + 1.0)).sum(-1)
    assert torch.allclose(out[..., 2:6], torch.log(expected), atol=1e-5)
    again = rebuild(model.source, [0.5] * 3, [0.25] * 3)  # type: ignore[attr-defined]
    again.load_state_dict(model.state_dict())
    assert torch.allclose(again.eval()(x), out, atol=1e-6)
    fcos, _ = build_student(ArchSpec(width=0.5), 3, 2, [0.5] * 3, [0.25] * 3, task="detection")
    assert edge_bins(fcos) == 0
    with pytest.raises(ValueError, match="no GFL-style box head"):
        capturing_edges(fcos)


def test_localisation_distillation_against_hand_values():
    """LD: tau^2 * KL(softmax(t / tau) || softmax(s / tau)) per side, the sides' mean, weighted by location."""
    t = torch.zeros(1, 2, 4, 2)
    t[..., 0] = math.log(3.0)  # the teacher's sides: (3/4, 1/4)
    s = torch.zeros(1, 2, 4, 2)  # the student's: (1/2, 1/2)
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    w = torch.tensor([[1.0, 0.0]])
    assert float(ld_loss(s, t, w, 1.0)) == pytest.approx(kl)
    assert float(ld_loss(t, t, w, 1.0)) == pytest.approx(0.0, abs=1e-7)
    # tau 2 softens both: the teacher's logits halve, (sqrt 3 : 1)
    p = math.sqrt(3) / (math.sqrt(3) + 1)
    soft = p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5)
    assert float(ld_loss(s, t, w, 2.0)) == pytest.approx(4 * soft)
    # the second location, weighted, averages in: it agrees, so the mean halves
    assert float(ld_loss(s, torch.cat([t[:, :1], s[:, 1:]], 1), torch.ones(1, 2), 1.0)) == pytest.approx(kl / 2)


def test_the_ld_term_needs_both_sides_distributions():
    y = torch.tensor([[[0.0, 8.0, 8.0, 40.0, 24.0]]])
    rows = raw_with(64, 2, [(0, [8.0, 8.0, 40.0, 24.0])])
    b = KDInputs(student_logits=rows, labels=y, teacher_logits=[rows])
    with pytest.raises(ConfigError, match="--det-head gfl"):
        combined_loss([("ld", 1.0)], b, KDSettings())
    edges = torch.zeros(1, locations(64), 4, GFL_BINS + 1)
    b.student_edges, b.teacher_edges = edges, edges[:, :10]
    with pytest.raises(ConfigError, match="one layout"):
        combined_loss([("ld", 1.0)], b, KDSettings())
