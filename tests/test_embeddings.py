"""Embeddings on real decoded images with the offline pretrained model."""

import numpy as np
import pytest
import torch
from PIL import Image

import label_audit as la
from label_audit.embeddings.images import load_rgb
from label_audit.embeddings.models import load_model

MODEL = "efficientnet-lite0"


@pytest.fixture(scope="module")
def lite0():
    return load_model(MODEL, device="cpu")


def _direct(model, images):
    batch = torch.stack([model.transform(im) for im in images])
    with torch.no_grad():
        return model.module(batch).numpy()


def _cos(a, b):
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return (a * b).sum(-1)


def test_vectors_deterministic_and_match_direct_forward(digits_dataset, lite0):
    view = digits_dataset.limit(12)
    r1 = la.compute_embeddings(view, model=MODEL, embeddings_field=None, progress=False)
    r2 = la.compute_embeddings(view, model=MODEL, embeddings_field=None, batch_size=5,
                               num_workers=0, progress=False)
    assert r1.embeddings.shape == (12, 1280) and r1.embeddings.dtype == np.float32
    np.testing.assert_allclose(r1.embeddings, r2.embeddings, rtol=1e-4, atol=1e-5)
    direct = _direct(lite0, [load_rgb(p) for p in view.values("filepath")])
    assert _cos(r1.embeddings, direct).min() > 0.9999


def test_same_digit_closer_than_different_digits(digits_dataset):
    la.compute_embeddings(digits_dataset, model=MODEL, progress=False)
    X = np.stack(digits_dataset.values("embeddings")).astype(np.float64)
    y = np.array(digits_dataset.values("ground_truth.label"))
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    sim = Xn @ Xn.T
    np.fill_diagonal(sim, -np.inf)
    nn_acc = (y[sim.argmax(1)] == y).mean()
    assert nn_acc > 0.6, nn_acc  # chance is 0.1
    same = sim[(y[:, None] == y[None]) & np.isfinite(sim)].mean()
    diff = sim[y[:, None] != y[None]].mean()
    assert same > diff


def test_torchvision_model_mechanics_with_random_weights(digits_dataset):
    r = la.compute_embeddings(digits_dataset.limit(4), model="resnet18", weights=None,
                              embeddings_field="rn18", progress=False)
    assert r.dim == 512 and r.num_embedded == 4
    v = np.stack(digits_dataset.limit(4).values("rn18"))
    assert v.shape == (4, 512) and np.isfinite(v).all()
    assert digits_dataset.get_run_info("rn18").config.model == "resnet18"


def test_resnet50_default_is_2048d_mechanics():
    model = load_model("resnet50", weights=None, device="cpu")
    assert model.dim == 2048


def test_custom_module_and_transform(digits_dataset):
    from torchvision import transforms as T

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten())
    transform = T.Compose([T.Resize((32, 32)), T.ToTensor()])
    r = la.compute_embeddings(digits_dataset.limit(3), model=net, transform=transform,
                              embeddings_field=None, progress=False)
    assert r.embeddings.shape == (3, 4)


def test_unknown_model_is_refused(digits_dataset):
    with pytest.raises(ValueError, match="Unknown model"):
        la.compute_embeddings(digits_dataset.limit(2), model="no-such-net", progress=False)


def test_reduce_dims_stores_reusable_projection(digits_dataset):
    from label_audit.embeddings.reduce import PCAReduction

    view = digits_dataset.limit(60)
    r = la.compute_embeddings(view, model=MODEL, embeddings_field="emb16", reduce_dims=16,
                              progress=False)
    assert r.dim == 16
    stored = np.stack(view.values("emb16"))
    results = digits_dataset.load_run_results("emb16")
    pca = PCAReduction.from_dict(results.reduction)
    full = la.compute_embeddings(view, model=MODEL, embeddings_field=None, progress=False)
    np.testing.assert_allclose(pca.transform(full.embeddings), stored, rtol=1e-3, atol=1e-3)
    # new samples embedded later (a view of part of the dataset) get the same basis: the
    # stored projection is reused, not refitted on those few samples
    part = view.limit(5)
    la.compute_embeddings(part, model=MODEL, embeddings_field="emb16", reduce_dims=16, progress=False)
    np.testing.assert_allclose(np.stack(part.values("emb16")), stored[:5], rtol=1e-4, atol=1e-4)
    assert digits_dataset.load_run_results("emb16", cache=False).reduction == results.reduction


# --- patches and masks -------------------------------------------------------


@pytest.fixture
def canvas_dataset(tmp_path, digits_dir, dataset):
    """Two digits side by side on 64x32 canvases, with boxes around each."""
    import fiftyone as fo

    _, filepaths, targets = digits_dir
    samples = []
    for k in range(4):
        left, right = np.asarray(Image.open(filepaths[2 * k])), np.asarray(Image.open(filepaths[2 * k + 1]))
        canvas = np.concatenate([left, right], axis=1)
        path = str(tmp_path / ("canvas_%d.png" % k))
        Image.fromarray(canvas).save(path)
        dets = [
            fo.Detection(label=str(targets[2 * k]), bounding_box=[0, 0, 0.5, 1]),
            fo.Detection(label=str(targets[2 * k + 1]), bounding_box=[0.5, 0, 0.5, 1]),
        ]
        samples.append(fo.Sample(filepath=path, ground_truth=fo.Detections(detections=dets)))
    dataset.add_samples(samples, progress=False)
    return dataset, filepaths


def test_patch_embeddings_equal_embeddings_of_the_cropped_images(canvas_dataset, lite0):
    ds, filepaths = canvas_dataset
    r = la.compute_embeddings(ds, model=MODEL, patches_field="ground_truth", progress=False)
    assert r.num_embedded == 8 and not r.failures
    vecs = np.stack(ds.values("ground_truth.detections.embeddings", unwind=True))
    direct = _direct(lite0, [load_rgb(p) for p in filepaths[:8]])
    assert _cos(vecs, direct).min() > 0.9999
    assert "ground_truth_embeddings" in ds.list_runs()


def test_masks_black_out_background(canvas_dataset, lite0):
    import fiftyone as fo

    ds, filepaths = canvas_dataset
    sample = ds.first()
    dets = sample.ground_truth.detections
    top_half = np.zeros((32, 32), dtype=bool)
    top_half[:16] = True
    dets[0].mask = top_half
    dets[1].mask = np.ones((8, 8), dtype=bool)  # full mask at another resolution
    sample.save()
    view = ds.select(sample.id)
    r = la.compute_embeddings(view, model=MODEL, patches_field="ground_truth",
                              use_masks=True, embeddings_field="masked", progress=False)
    assert r.num_embedded == 2
    vecs = np.stack(view.values("ground_truth.detections.masked", unwind=True))
    left = np.asarray(load_rgb(filepaths[0])).copy()
    left[16:] = 0
    expected = _direct(lite0, [Image.fromarray(left), load_rgb(filepaths[1])])
    assert _cos(vecs, expected).min() > 0.9999


def test_masks_stored_on_disk_are_read(canvas_dataset, lite0, tmp_path):
    """Detection.mask_path (FiftyOne's on-disk masks) is applied like Detection.mask; a mask
    file that cannot be read is reported for that object."""
    ds, filepaths = canvas_dataset
    sample = ds.first()
    top_half = np.zeros((32, 32), dtype=np.uint8)
    top_half[:16] = 255
    Image.fromarray(top_half).save(tmp_path / "mask0.png")
    dets = sample.ground_truth.detections
    dets[0].mask_path = str(tmp_path / "mask0.png")
    dets[1].mask_path = str(tmp_path / "missing.png")
    sample.save()
    view = ds.select(sample.id)
    r = la.compute_embeddings(view, model=MODEL, patches_field="ground_truth",
                              use_masks=True, embeddings_field="masked_disk", progress=False)
    assert r.num_embedded == 1 and len(r.failures) == 1
    assert "could not read mask_path" in str(r.failures[0].reason)
    left = np.asarray(load_rgb(filepaths[0])).copy()
    left[16:] = 0
    got = np.asarray(view.values("ground_truth.detections.masked_disk", unwind=True)[0])[None]
    assert _cos(got, _direct(lite0, [Image.fromarray(left)])).min() > 0.9999


def test_polyline_masks(tmp_path, digits_dir, dataset, lite0):
    import fiftyone as fo

    _, filepaths, _ = digits_dir
    poly = fo.Polyline(label="a", points=[[(0, 0), (1, 0), (1, 0.5), (0, 0.5)]], closed=True,
                       filled=True)
    dataset.add_sample(fo.Sample(filepath=filepaths[0], polys=fo.Polylines(polylines=[poly])))
    r = la.compute_embeddings(dataset, model=MODEL, patches_field="polys", use_masks=True,
                              embeddings_field=None, progress=False)
    img = np.asarray(load_rgb(filepaths[0]))
    expected = _direct(lite0, [Image.fromarray(img[:16])])
    assert _cos(r.embeddings, expected).min() > 0.9999


def test_crowd_boxes_skipped_by_default(canvas_dataset):
    ds, _ = canvas_dataset
    sample = ds.first()
    sample.ground_truth.detections[0]["iscrowd"] = 1
    sample.save()
    r = la.compute_embeddings(ds, model=MODEL, patches_field="ground_truth",
                              embeddings_field=None, progress=False)
    assert r.num_embedded == 7
    r = la.compute_embeddings(ds, model=MODEL, patches_field="ground_truth", skip_crowd=False,
                              embeddings_field=None, progress=False)
    assert r.num_embedded == 8


# --- bad input ---------------------------------------------------------------


def test_missing_and_corrupt_files_reported_and_tagged(tmp_path, digits_dir, dataset):
    import fiftyone as fo

    _, filepaths, _ = digits_dir
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    missing = tmp_path / "missing.png"
    dataset.add_samples([fo.Sample(filepath=p) for p in (filepaths[0], str(corrupt), str(missing))],
                        progress=False)
    r = la.compute_embeddings(dataset, model=MODEL, progress=False)
    assert r.num_embedded == 1 and r.num_failed == 2
    bad = dataset.match_tags("audit:embedding_failed")
    assert sorted(bad.values("filepath")) == sorted([str(corrupt), str(missing)])
    assert {f.sample_id for f in r.failures} == set(bad.values("id"))
    assert "not found" in " ".join(f.reason for f in r.failures)
    assert dataset.exists("embeddings").count() == 1
    # after fixing the file, a rerun clears the tag
    corrupt.write_bytes(open(filepaths[1], "rb").read())
    missing.write_bytes(open(filepaths[2], "rb").read())
    r = la.compute_embeddings(dataset, model=MODEL, progress=False)
    assert r.num_failed == 0 and len(dataset.match_tags("audit:embedding_failed")) == 0


def test_skip_failures_false_raises_before_writing(tmp_path, digits_dir, dataset):
    import fiftyone as fo

    _, filepaths, _ = digits_dir
    dataset.add_samples([fo.Sample(filepath=filepaths[0]),
                         fo.Sample(filepath=str(tmp_path / "gone.png"))], progress=False)
    with pytest.raises(ValueError, match="nothing was written"):
        la.compute_embeddings(dataset, model=MODEL, skip_failures=False, progress=False)
    assert not dataset.has_sample_field("embeddings")


def test_grayscale_rgba_palette_and_16bit_images_are_converted(tmp_path, digits_dir, dataset):
    import fiftyone as fo

    _, filepaths, _ = digits_dir
    gray = np.asarray(Image.open(filepaths[3]))
    paths = {}
    paths["L"] = filepaths[3]
    Image.fromarray(np.stack([gray] * 3 + [np.full_like(gray, 255)], -1), "RGBA").save(tmp_path / "rgba.png")
    paths["RGBA"] = str(tmp_path / "rgba.png")
    Image.fromarray(gray).convert("P").save(tmp_path / "p.png")
    paths["P"] = str(tmp_path / "p.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "i16.png")
    paths["I16"] = str(tmp_path / "i16.png")
    dataset.add_samples([fo.Sample(filepath=p, kind=k) for k, p in paths.items()], progress=False)
    r = la.compute_embeddings(dataset, model=MODEL, embeddings_field=None, progress=False)
    assert r.num_failed == 0
    assert _cos(r.embeddings, r.embeddings[:1]).min() > 0.999  # all the same picture


def test_bad_boxes_reported_others_embedded(canvas_dataset):
    import fiftyone as fo

    ds, _ = canvas_dataset
    sample = ds.first()
    sample.ground_truth.detections.extend([
        fo.Detection(label="out", bounding_box=[1.2, 1.2, 0.3, 0.3]),
        fo.Detection(label="zero", bounding_box=[0.1, 0.1, 0.0, 0.5]),
        fo.Detection(label="nan", bounding_box=[float("nan"), 0.1, 0.2, 0.2]),
    ])
    sample.save()
    r = la.compute_embeddings(ds, model=MODEL, patches_field="ground_truth", progress=False)
    assert r.num_embedded == 8 and r.num_failed == 3
    reasons = " | ".join(f.reason for f in r.failures)
    assert "outside" in reasons and "zero" in reasons and "NaN" in reasons
    assert all(f.label_id and f.sample_id == sample.id for f in r.failures)
    assert ds.match_tags("audit:embedding_failed").values("id") == [sample.id]


def test_wrong_patches_field_type(digits_dataset):
    with pytest.raises(ValueError, match="ground_truth.*Detections or Polylines"):
        la.compute_embeddings(digits_dataset, model=MODEL, patches_field="ground_truth")
    with pytest.raises(ValueError, match="no such field"):
        la.compute_embeddings(digits_dataset, model=MODEL, patches_field="nope")


def test_empty_view_and_video_refused(digits_dataset, dataset):
    import fiftyone as fo

    with pytest.raises(ValueError, match="empty"):
        la.compute_embeddings(digits_dataset.limit(0), model=MODEL)
    dataset.add_sample(fo.Sample(filepath="/tmp/some_video.mp4"))
    with pytest.raises(ValueError, match="video"):
        la.compute_embeddings(dataset, model=MODEL)


def test_failure_midway_leaves_existing_embeddings_untouched(digits_dataset):
    view = digits_dataset.limit(20)
    la.compute_embeddings(view, model=MODEL, progress=False)
    before = np.stack(view.values("embeddings"))

    class Exploding(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            if self.calls > 2:  # the dim probe, then one batch, then boom
                raise RuntimeError("simulated crash")
            return x.mean(dim=(2, 3))

    with pytest.raises(RuntimeError, match="simulated crash"):
        la.compute_embeddings(view, model=Exploding(), batch_size=4, progress=False)
    after = np.stack(view.values("embeddings"))
    np.testing.assert_array_equal(before, after)
    assert digits_dataset.get_run_info("embeddings").config.model == MODEL


def test_zoo_names_resolve_and_fiftyone_models_run_through_fiftyone(digits_dataset, lite0):
    """The zoo path's mechanics: names resolve, FiftyOne Model objects are delegated."""
    import fiftyone.utils.torch as fout

    from label_audit.embeddings.compute import _zoo_model

    assert _zoo_model("resnet50") is None  # torchvision wins
    assert _zoo_model("efficientnet-lite0") is None
    assert _zoo_model("clip-vit-base32-torch") == "clip-vit-base32-torch"
    assert _zoo_model("no-such-model") is None
    fo_model = fout.TorchImageModel(fout.TorchImageModelConfig(
        {"model": lite0.module, "transforms": lite0.transform, "as_feature_extractor": True,
         "device": "cpu"}))
    view = digits_dataset.limit(4)
    r = la.compute_embeddings(view, model=fo_model, embeddings_field="fo_emb", progress=False)
    assert r.num_embedded == 4
    ours = la.compute_embeddings(view, model=MODEL, embeddings_field=None, progress=False)
    assert _cos(np.stack(view.values("fo_emb")), ours.embeddings).min() > 0.9999
    # options FiftyOne's own path would ignore are refused, not silently dropped
    for kwargs in (dict(reduce_dims=2), dict(use_masks=True, patches_field="ground_truth")):
        with pytest.raises(ValueError, match="does not apply %s" % list(kwargs)[0]):
            la.compute_embeddings(view, model=fo_model, embeddings_field="fo_emb2", progress=False, **kwargs)
    assert not digits_dataset.has_sample_field("fo_emb2")


def test_custom_module_with_a_fixed_input_size(digits_dataset):
    """The embedding size is probed through the given transform (a module that only takes
    32x32 inputs used to fail on a 224x224 probe)."""
    from torchvision import transforms as T

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 4))
    transform = T.Compose([T.Resize((32, 32)), T.ToTensor()])
    r = la.compute_embeddings(digits_dataset.limit(3), model=net, transform=transform,
                              embeddings_field=None, progress=False)
    assert r.embeddings.shape == (3, 4)


def test_interrupted_write_restores_previous_vectors(digits_dataset):
    """A failing write leaves the previous vectors and removes a field it declared.

    (FiftyOne validates the ids before writing here, so this exercises the
    field clean-up; the restore of partially written vectors is not forced.)"""
    from label_audit.embeddings.compute import _write_embeddings

    view = digits_dataset.limit(10)
    la.compute_embeddings(view, model=MODEL, progress=False)
    before = np.stack(view.values("embeddings"))
    ids = view.values("id")
    X = np.ones((10, before.shape[1]), dtype=np.float32)
    ok = np.ones(10, bool)
    bad_ids = ids[:9] + ["not-an-object-id"]  # the write fails on the last row
    with pytest.raises(Exception):
        _write_embeddings(view, "embeddings", None, None, ids, bad_ids, ids, X, ok)
    np.testing.assert_array_equal(np.stack(view.values("embeddings")), before)
    with pytest.raises(Exception):
        _write_embeddings(view, "fresh_field", None, None, ids, bad_ids, ids, X, ok)
    assert not digits_dataset.has_sample_field("fresh_field")


def test_a_transform_without_a_fixed_size_is_a_clear_error(tmp_path, dataset):
    import fiftyone as fo
    from torchvision import transforms as T

    paths = []
    for k, size in enumerate([(32, 32), (48, 24)]):
        paths.append(str(tmp_path / ("img%d.png" % k)))
        Image.fromarray(np.full(size[::-1] + (3,), 100 + k, np.uint8)).save(paths[-1])
    dataset.add_samples([fo.Sample(filepath=p) for p in paths], progress=False)
    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    with pytest.raises(ValueError, match=r"transform gives images of different sizes.*Resize\(\(224, 224\)\)"):
        la.compute_embeddings(dataset, model=net, transform=T.ToTensor(), embeddings_field="e",
                              num_workers=0, progress=False)
    assert not dataset.has_sample_field("e")
