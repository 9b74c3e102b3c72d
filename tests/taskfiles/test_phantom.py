"""The phantom generator: determinism, distribution, geometry, and truth checked from the pixels."""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pytest
from scipy import ndimage

from medharness.core.records import Sample
from medharness.taskfiles import phantom

THRESHOLD = 170  # between the body (<= ~137) and the lesions (>= 200)


def png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def blobs(image) -> tuple[int, list[tuple[int, tuple[slice, slice], tuple[float, float]]]]:
    """Bright 4-connected components: count, and (area, slices, (x, y) centroid) largest first."""
    grey = np.asarray(image)[..., 0]
    assert (np.asarray(image) == grey[..., None]).all()  # grey-scale stored as RGB
    labels, n = ndimage.label(grey >= THRESHOLD)
    idx = range(1, n + 1)
    areas = ndimage.sum_labels(np.ones_like(grey), labels, idx)
    found = ndimage.find_objects(labels)
    centres = ndimage.center_of_mass(np.ones_like(grey), labels, idx)
    out = [(int(a), s, (c[1] + 0.5, c[0] + 0.5)) for a, s, c in zip(areas, found, centres)]
    return n, sorted(out, key=lambda b: -b[0])


def test_determinism_same_seed_identical_samples_and_bytes():
    for kind in phantom.KINDS:
        a = phantom.make_samples(kind, seed=3, n=20, task="t")
        b = phantom.make_samples(kind, seed=3, n=20, task="t")
        assert [s.model_dump() for s in a] == [s.model_dump() for s in b]
        assert len(a) == 20 and len({s.id for s in a}) == 20
    for index in range(5):
        case = phantom.make_case(3, index)
        assert png(phantom.render(case)) == png(phantom.render(phantom.make_case(3, index)))
    ref = "phantom:3/4/224"
    assert phantom.open_image(ref).tobytes() == phantom.render(phantom.make_case(3, 4)).tobytes()


def test_different_seed_differs():
    a = phantom.make_samples("box", seed=0, n=20, task="t")
    b = phantom.make_samples("box", seed=1, n=20, task="t")
    assert [s.target for s in a] != [s.target for s in b]
    assert phantom.make_case(0, 0) != phantom.make_case(1, 0)
    pixels = [phantom.render(phantom.make_case(seed, 0)).tobytes() for seed in (0, 1)]
    assert pixels[0] != pixels[1]


def test_sample_shape():
    for kind in phantom.KINDS:
        for s in phantom.make_samples(kind, seed=0, n=30, task="phantom_x"):
            assert isinstance(s, Sample) and Sample.model_validate_json(s.to_json()) == s
            index = int(s.id.split("-")[1])
            assert s.id == f"{kind}-{index:05d}" and s.images == (f"phantom:0/{index}/224",)
            assert s.task == "phantom_x"
            assert s.meta["kind"] == kind and s.meta["image_size"] == [224, 224]
            case = phantom.make_case(0, index)
            assert s.meta["n_lesions"] == len(case.lesions)
            if kind == "presence":
                assert s.target in ("yes", "no") and s.meta["answer_type"] == "CLOSED"
            elif kind == "count":
                assert s.target in ("0", "1", "2", "3") and s.meta["answer_type"] == "OPEN"
            elif kind == "side":
                assert s.target in ("left", "right") and s.choices == ("left", "right")
                assert s.meta["answer_type"] == "CLOSED" and s.meta["n_lesions"] >= 1
            elif kind == "size":
                assert s.target in (0, 1, 2, 3) and type(s.target) is int and s.meta["answer_type"] == "OPEN"
            else:
                assert s.meta["n_lesions"] >= 1 and s.target == phantom.largest_box(case)
                assert len(s.target) == 4
    with pytest.raises(ValueError, match="unknown phantom question kind"):
        phantom.make_samples("shape", seed=0, n=1, task="t")


def test_side_and_box_skip_lesion_free_cases_with_stable_ids():
    side = phantom.make_samples("side", seed=0, n=50, task="t")
    count = phantom.make_samples("count", seed=0, n=int(side[-1].id.split("-")[1]) + 1, task="t")
    with_lesions = [s.id.split("-")[1] for s in count if s.target != "0"]
    assert [s.id.split("-")[1] for s in side] == with_lesions


def test_distributions_over_200_cases():
    cases = [phantom.make_case(0, i) for i in range(200)]
    counts = Counter(len(c.lesions) for c in cases)
    assert set(counts) == {0, 1, 2, 3} and min(counts.values()) >= 30
    grades = Counter(phantom.size_grade(c) for c in cases)
    assert set(grades) == {0, 1, 2, 3} and min(grades.values()) >= 30
    sides = Counter(phantom.side(c) for c in cases if c.lesions)
    assert min(sides["left"], sides["right"]) >= 50


def test_lesions_inside_body_and_apart():
    for i in range(200):
        case = phantom.make_case(5, i)
        cx, cy, rx, ry = case.body
        assert 0 <= cx - rx and cx + rx <= case.size and 0 <= cy - ry and cy + ry <= case.size
        t = np.linspace(0, 2 * np.pi, 360)
        for le in case.lesions:
            px, py = le.cx + le.radius * np.cos(t), le.cy + le.radius * np.sin(t)
            assert (((px - cx) / rx) ** 2 + ((py - cy) / ry) ** 2 < 1).all()
            assert 200 <= le.intensity <= 255
        for j, a in enumerate(case.lesions):
            for b in case.lesions[j + 1:]:
                assert np.hypot(a.cx - b.cx, a.cy - b.cy) > a.radius + b.radius + 2
        if case.lesions:  # the largest is unambiguous and the grade is away from the thresholds
            radii = sorted((le.radius for le in case.lesions), reverse=True)
            assert len(radii) == 1 or radii[1] <= 0.76 * radii[0]
            frac = radii[0] / case.size
            assert all(abs(frac - th) > 0.005 for th in phantom.GRADE_THRESHOLDS)


def test_size_grade_thresholds():
    def case(radius: float) -> phantom.PhantomCase:
        return phantom.PhantomCase(0, 0, 200, (100, 100, 80, 80), (phantom.Lesion(100, 100, radius, 220),))

    assert phantom.size_grade(phantom.PhantomCase(0, 0, 200, (100, 100, 80, 80), ())) == 0
    assert [phantom.size_grade(case(r)) for r in (5, 8.7, 8.9, 13.5, 13.7, 18)] == [1, 1, 2, 2, 3, 3]
    assert phantom.side(case(5)) == "right"  # cx == size/2 is on the right half
    assert phantom.largest_box(case(5)) == [95.0, 95.0, 105.0, 105.0]


def test_truth_matches_pixels():
    for i in range(120):
        case = phantom.make_case(0, i)
        n, found = blobs(phantom.render(case))
        assert n == len(case.lesions), f"case {i}"
        box = phantom.largest_box(case)
        if not n:
            assert box is None and phantom.side(case) is None and phantom.size_grade(case) == 0
            continue
        area, (rows, cols), (x, _y) = found[0]
        pixel_box = [cols.start, rows.start, cols.stop, rows.stop]
        assert np.allclose(box, pixel_box, atol=2), f"case {i}: {box} vs {pixel_box}"
        assert phantom.side(case) == ("left" if x < case.size / 2 else "right")
        big = max(case.lesions, key=lambda le: le.radius)
        assert abs(area - np.pi * big.radius**2) < 2 * np.pi * big.radius + 4  # area within the rim
        if len(found) > 1:
            assert found[1][0] < area


def test_blank_image_changes_the_answer():
    blank = phantom.Image.new("RGB", (224, 224))
    assert blobs(blank)[0] == 0
    assert [phantom.blank_truth(k) for k in phantom.KINDS] == ["no", "0", None, 0, None]
    cases = [phantom.make_case(0, i) for i in range(40)]
    assert any(phantom.blank_truth("presence") != ("yes" if c.lesions else "no") for c in cases)
    with pytest.raises(ValueError):
        phantom.blank_truth("colour")


@pytest.mark.parametrize("ref", ["phantom:1/2", "phantom:a/2/224", "npz:test/1", "phantom:1/2/224/9", "",
                                 "phantom:-1/2/224", "phantom:1/2/8"])
def test_malformed_ref(ref):
    with pytest.raises(ValueError, match="phantom") as info:
        phantom.open_image(ref)
    assert repr(ref) in str(info.value)


def test_open_image_size():
    image = phantom.open_image("phantom:0/7/128")
    assert image.mode == "RGB" and image.size == (128, 128)


def test_render_is_deterministic_per_case():
    first = [phantom.render(phantom.make_case(9, i)).tobytes() for i in range(20)]
    assert first == [phantom.render(phantom.make_case(9, i)).tobytes() for i in range(20)]
    assert len(set(first)) > 1  # cases differ



def test_the_train_split_of_a_phantom_source() -> None:
    from pydantic import ValidationError

    from medharness.taskfiles.sources import PhantomSource

    source = PhantomSource(kind="phantom", question="presence", train={"n": 10})
    assert source.train.seed is None and source.n == 200
    with pytest.raises(ValidationError, match="equals the test seed"):
        PhantomSource(kind="phantom", question="presence", seed=3, train={"seed": 3})
    with pytest.raises(ValidationError, match="extra|not permitted"):
        PhantomSource(kind="phantom", question="presence", train={"balanced": True})
