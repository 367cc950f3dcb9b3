"""Face counting (MTCNN) and embeddings (dlib, facenet) on real faces."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from safeguards.errors import EmbedderUnavailable, EmbeddingMismatch, InvalidFaceImage
from safeguards.identity import (
    DEFAULT_SUBJECT_MATCH_THRESHOLD,
    DetectedFace,
    DlibEmbedder,
    FaceAnalyzer,
    FaceBox,
    FaceEmbedder,
    FacenetEmbedder,
    face_distance,
)


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def astronaut(example_photo: Path) -> np.ndarray:
    return _rgb(example_photo)


@pytest.fixture(scope="module")
def astronaut_face(analyzer: FaceAnalyzer, astronaut: np.ndarray) -> DetectedFace:
    faces = analyzer.faces(astronaut)
    assert len(faces) == 1
    return faces[0]


def test_example_photo_has_one_face_with_a_dlib_embedding(astronaut_face: DetectedFace) -> None:
    face = astronaut_face
    assert face.score >= 0.95
    assert face.embedding.shape == (128,) and face.embedding.dtype == np.float32
    assert np.isfinite(face.embedding).all() and 0.1 < float(np.linalg.norm(face.embedding)) < 2.0
    assert face.landmarks5.shape == (5, 2)
    # The face sits in the upper middle of the portrait; landmarks lie inside the box.
    assert 150 < face.box.left < face.box.right < 300 and 40 < face.box.top < face.box.bottom < 200
    inside = (face.landmarks5[:, 0] > face.box.left) & (face.landmarks5[:, 0] < face.box.right)
    assert inside.all()


def test_same_photo_embeds_identically_and_flip_stays_close(
    analyzer: FaceAnalyzer, astronaut: np.ndarray, astronaut_face: DetectedFace
) -> None:
    again = analyzer.faces(astronaut)[0]
    assert face_distance(again.embedding, astronaut_face.embedding) < 1e-5
    flipped = analyzer.faces(np.ascontiguousarray(astronaut[:, ::-1]))
    assert len(flipped) == 1
    assert face_distance(flipped[0].embedding, astronaut_face.embedding) < DEFAULT_SUBJECT_MATCH_THRESHOLD


def test_blank_and_noise_images_have_no_face(analyzer: FaceAnalyzer) -> None:
    assert analyzer.faces(np.full((300, 400, 3), 128, np.uint8)) == []
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    assert analyzer.count(noise) == 0


def test_two_copies_side_by_side_are_two_faces(analyzer: FaceAnalyzer, astronaut: np.ndarray) -> None:
    faces = analyzer.faces(np.hstack([astronaut, astronaut]))
    assert len(faces) == 2
    assert face_distance(faces[0].embedding, faces[1].embedding) < 0.05


def test_large_photo_is_downscaled_for_detection_and_boxes_map_back(
    analyzer: FaceAnalyzer, astronaut: np.ndarray, astronaut_face: DetectedFace
) -> None:
    big = np.asarray(Image.fromarray(astronaut).resize((1536, 1536), Image.BICUBIC))
    faces = analyzer.faces(big)
    assert len(faces) == 1
    box, ref = faces[0].box, astronaut_face.box.scaled(3.0)
    assert abs(box.left - ref.left) < 15 and abs(box.bottom - ref.bottom) < 15
    assert face_distance(faces[0].embedding, astronaut_face.embedding) < 0.2


def test_faces_smaller_than_min_face_px_are_ignored(astronaut: np.ndarray) -> None:
    tiny = np.asarray(Image.fromarray(astronaut).resize((128, 128), Image.BICUBIC))  # face ~22 px wide
    strict = FaceAnalyzer(min_face_px=40)
    lenient = FaceAnalyzer(min_face_px=12)
    assert strict.count(tiny) == 0
    assert lenient.count(tiny) == 1


def test_concurrent_calls_give_the_same_answer(analyzer: FaceAnalyzer, astronaut: np.ndarray) -> None:
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(analyzer.faces, [astronaut] * 3))
    assert all(len(r) == 1 for r in results)
    assert max(face_distance(r[0].embedding, results[0][0].embedding) for r in results) < 1e-5


@pytest.mark.parametrize(
    "bad",
    [np.zeros((64, 64), np.uint8), np.zeros((64, 64, 3), np.float32), np.zeros((64, 64, 4), np.uint8)],
    ids=["gray", "float", "rgba"],
)
def test_non_rgb_input_is_refused(analyzer: FaceAnalyzer, bad: np.ndarray) -> None:
    with pytest.raises(InvalidFaceImage) as info:
        analyzer.faces(bad)
    assert info.value.code == "invalid_face_image"


def test_face_distance_is_euclidean_and_refuses_mixed_embedders() -> None:
    a = np.array([0.0, 3.0], np.float32)
    b = np.array([4.0, 0.0], np.float32)
    assert face_distance(a, b) == pytest.approx(5.0)
    assert face_distance(b, a) == face_distance(a, b)
    with pytest.raises(EmbeddingMismatch) as info:
        face_distance(np.zeros(128), np.zeros(512))
    assert info.value.code == "embedding_mismatch"


def test_dlib_embedder_follows_the_protocol(astronaut: np.ndarray, astronaut_face: DetectedFace) -> None:
    embedder = DlibEmbedder()
    assert isinstance(embedder, FaceEmbedder)
    assert (embedder.name, embedder.dim) == ("dlib_resnet_v1", 128)
    points = embedder.landmarks(astronaut, astronaut_face.box)
    assert points.shape == (5, 2)
    box = astronaut_face.box
    assert ((points[:, 0] > box.left) & (points[:, 0] < box.right)).all()


# --- facenet (weights are not downloadable here: a randomly initialised state dict stands in) -----------------


@pytest.fixture(scope="module")
def random_facenet_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch")
    from safeguards._inception_resnet_v1 import InceptionResnetV1

    torch.manual_seed(0)
    state = InceptionResnetV1(pretrained=None).state_dict()
    # The real vggface2 file also holds the 8631-class head; the embedder must drop it.
    state["logits.weight"] = torch.zeros(8631, 512)
    state["logits.bias"] = torch.zeros(8631)
    path = tmp_path_factory.mktemp("facenet") / "random-vggface2.pt"
    torch.save(state, path)
    return path


def test_facenet_loads_a_local_state_dict_and_gives_unit_vectors(
    random_facenet_weights: Path, astronaut: np.ndarray, astronaut_face: DetectedFace
) -> None:
    embedder = FacenetEmbedder(random_facenet_weights, device="cpu")
    assert isinstance(embedder, FaceEmbedder)
    assert (embedder.name, embedder.dim) == ("facenet_vggface2", 512)
    vec = embedder.embed(astronaut, astronaut_face.box)
    assert vec.shape == (512,) and vec.dtype == np.float32
    assert float(np.linalg.norm(vec)) == pytest.approx(1.0, abs=1e-4)
    assert face_distance(vec, embedder.embed(astronaut, astronaut_face.box)) < 1e-5
    other = embedder.embed(astronaut, FaceBox(0, 0, 120, 120))  # a patch of flag, not the face
    assert face_distance(vec, other) > 1e-3


def test_facenet_works_inside_the_analyzer(random_facenet_weights: Path, astronaut: np.ndarray) -> None:
    faces = FaceAnalyzer(FacenetEmbedder(random_facenet_weights)).faces(astronaut)
    assert len(faces) == 1 and faces[0].embedding.shape == (512,)


def test_facenet_missing_or_bad_weights_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(EmbedderUnavailable, match="does not exist") as info:
        FacenetEmbedder(tmp_path / "nope.pt")
    assert info.value.code == "embedder_unavailable"
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(EmbedderUnavailable, match="could not be read"):
        FacenetEmbedder(garbage)
    torch = pytest.importorskip("torch")
    wrong = tmp_path / "wrong.pt"
    torch.save({"conv.weight": torch.zeros(3, 3)}, wrong)
    with pytest.raises(EmbedderUnavailable, match="does not fit"):
        FacenetEmbedder(wrong)


# --- real media ------------------------------------------------------------------------------------------------


@pytest.mark.shared_media
@pytest.mark.parametrize(
    ("relpath", "count"),
    [
        ("portraits/astronaut_eileen_collins.png", 1),
        ("portraits/two_faces_women_dlib_2008_001009.jpg", 2),
        ("nonface/coffee.png", 0),
        ("nonface/dogs_dlib.jpg", 0),
        # A jacket fold in this portrait scores 0.93 with MTCNN: it must not count as a second face.
        ("celebrities/obama_face_recognition.jpg", 1),
        ("celebrities/two_people_obama_biden.jpg", 2),
    ],
)
def test_face_counts_on_real_media(analyzer: FaceAnalyzer, shared_media: Path, relpath: str, count: int) -> None:
    assert analyzer.count(_rgb(shared_media / relpath)) == count


def _single(analyzer: FaceAnalyzer, path: Path) -> np.ndarray:
    faces = analyzer.faces(_rgb(path))
    assert len(faces) == 1, path.name
    return faces[0].embedding


@pytest.mark.shared_media
def test_same_person_is_under_the_threshold_and_different_people_above(
    analyzer: FaceAnalyzer, shared_media: Path
) -> None:
    celeb = shared_media / "celebrities"
    obama = _single(analyzer, celeb / "obama_face_recognition.jpg")
    obama_small = _single(analyzer, celeb / "obama_small.jpg")
    jolie = _single(analyzer, celeb / "angelina_jolie_facenet.jpg")
    jolie2 = _single(analyzer, celeb / "angelina_jolie_deepface_img5.jpg")
    siegel = _single(analyzer, celeb / "kate_siegel_facenet.jpg")
    biden = _single(analyzer, celeb / "biden_face_recognition.jpg")
    pair = sorted(analyzer.faces(_rgb(celeb / "two_people_obama_biden.jpg")), key=lambda f: f.box.left)
    obama_in_pair, biden_in_pair = pair[0].embedding, pair[1].embedding  # Obama stands on the left

    threshold = DEFAULT_SUBJECT_MATCH_THRESHOLD
    for a, b in [(obama, obama_small), (jolie, jolie2), (obama, obama_in_pair), (biden, biden_in_pair)]:
        assert face_distance(a, b) < threshold
    for a, b in [(obama, biden), (jolie, siegel), (jolie2, siegel), (obama_small, biden_in_pair)]:
        assert face_distance(a, b) > threshold


@pytest.mark.gpu
def test_cuda_detection_and_facenet_match_cpu(
    random_facenet_weights: Path, astronaut: np.ndarray, astronaut_face: DetectedFace
) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available")
    faces = FaceAnalyzer(device="cuda").faces(astronaut)
    assert len(faces) == 1
    assert abs(faces[0].box.left - astronaut_face.box.left) < 2
    cpu = FacenetEmbedder(random_facenet_weights, device="cpu").embed(astronaut, astronaut_face.box)
    gpu = FacenetEmbedder(random_facenet_weights, device="cuda").embed(astronaut, astronaut_face.box)
    assert face_distance(cpu, gpu) < 1e-3


# --- issue 15: bands, quality, fused dlib views ----------------------------------------------------------------


def test_band_classifies_both_ends_and_refuses_a_swapped_band() -> None:
    from safeguards.identity import Band

    band = Band(0.45, 0.62)
    assert [band.classify(d) for d in (0.0, 0.45, 0.4501, 0.62, 0.6201)] == [
        "match",
        "match",
        "review",
        "review",
        "no_match",
    ]
    with pytest.raises(ValueError):
        Band(0.6, 0.5)


def test_a_poor_photo_widens_the_review_bands_but_never_the_outright_block() -> None:
    from safeguards.identity import IdentityThresholds

    good = IdentityThresholds()
    poor = good.for_photo(True)
    m = good.poor_photo_margin
    assert good.for_photo(False) is good
    assert poor.subject.match == pytest.approx(good.subject.match - m)
    assert poor.subject.review == pytest.approx(good.subject.review + m)
    assert poor.block.match == good.block.match and poor.block.review == pytest.approx(good.block.review + m)


def test_quality_of_a_good_photo_and_of_degraded_copies(analyzer: FaceAnalyzer, astronaut: np.ndarray) -> None:
    import cv2

    from safeguards.identity import QualityLimits, measure_quality

    face = analyzer.faces(astronaut)[0]
    assert face.quality is not None and face.quality.issues == () and not face.quality.poor
    assert face.quality.alignment_error is not None and face.quality.alignment_error < 0.09
    assert abs(face.quality.yaw) < 0.2 and abs(face.quality.roll_deg) < 10
    blurred = analyzer.faces(cv2.GaussianBlur(astronaut, (0, 0), 4))[0]
    assert blurred.quality is not None and "blurry" in blurred.quality.issues
    small = cv2.resize(astronaut, (384, 384), interpolation=cv2.INTER_AREA)  # the 88 px face becomes ~66 px
    small_face = analyzer.faces(small)[0]
    assert small_face.quality is not None and "small_face" in small_face.quality.issues
    # Landmarks with the nose outside the eyes (a profile or a covered face) read as turned and occluded.
    pts = face.landmarks5.copy()
    pts[2, 0] = pts[1, 0] + 30.0
    odd = measure_quality(astronaut, face.box, pts, face.score, limits=QualityLimits())
    assert {"turned", "occluded"} <= set(odd.issues)
    low_score = measure_quality(astronaut, face.box, face.landmarks5, 0.9)
    assert "occluded" in low_score.issues


def test_fused_views_stay_in_the_plain_descriptor_space(astronaut: np.ndarray, astronaut_face: DetectedFace) -> None:
    plain = DlibEmbedder(fuse=False)
    fused = DlibEmbedder(fuse=True)
    assert plain.name == fused.name  # stored references stay comparable across the change
    a = plain.embed(astronaut, astronaut_face.box)
    b = fused.embed(astronaut, astronaut_face.box)
    assert 0.0 < face_distance(a, b) < 0.15
    np.testing.assert_allclose(fused.embed(astronaut, astronaut_face.box), b, atol=1e-5)  # deterministic
    jittered = DlibEmbedder(fuse=False, num_jitters=3)
    assert jittered.num_jitters == 3 and face_distance(jittered.embed(astronaut, astronaut_face.box), a) < 0.15
