"""``label-audit bench embeddings``: throughput and peak memory of
label-audit's ``compute_embeddings`` against FiftyOne's own
``compute_embeddings`` / ``compute_patch_embeddings``, same model, same
images, same run.

Images: real digits from scikit-learn composed onto 256x256 JPEG canvases
(a 4x4 grid with jitter, 16 boxed objects per image), decoded from disk.
Each method runs in its own subprocess against a private MongoDB, so peak RSS
(``ru_maxrss`` of the process plus its DataLoader workers) is per method.

    label-audit bench embeddings [--images 200] [--patch-images 40]
        [--model efficientnet-lite0] [--batch-size 32] [--num-workers 1]
        [--threads 2] [--repeats 2] [--json]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

GRID = 4
CANVAS = 256


def make_canvases(folder, n, random_state=0):
    """Writes ``n`` JPEG canvases of 16 digits; returns paths, boxes, labels."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.RandomState(random_state)
    cell = CANVAS // GRID
    paths, boxes, labels = [], [], []
    os.makedirs(folder, exist_ok=True)
    for i in range(n):
        canvas = np.zeros((CANVAS, CANVAS, 3), dtype=np.uint8)
        canvas[:] = rng.randint(0, 60, size=3)
        img_boxes, img_labels = [], []
        for gy in range(GRID):
            for gx in range(GRID):
                k = rng.randint(len(digits.target))
                size = rng.randint(cell // 2, cell - 4)
                tile = Image.fromarray((digits.images[k] * 255 / 16).astype(np.uint8))
                tile = np.asarray(tile.resize((size, size), Image.BILINEAR))
                x0 = gx * cell + rng.randint(0, cell - size)
                y0 = gy * cell + rng.randint(0, cell - size)
                canvas[y0:y0 + size, x0:x0 + size] = np.maximum(
                    canvas[y0:y0 + size, x0:x0 + size], tile[..., None])
                img_boxes.append([x0 / CANVAS, y0 / CANVAS, size / CANVAS, size / CANVAS])
                img_labels.append(str(digits.target[k]))
        path = os.path.join(folder, "canvas_%05d.jpg" % i)
        Image.fromarray(canvas).save(path, quality=92)
        paths.append(path)
        boxes.append(img_boxes)
        labels.append(img_labels)
    return paths, boxes, labels


def _peak_rss_mb():
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (self_kb + child_kb) / 1024.0


def _fiftyone_model(em):
    import fiftyone.utils.torch as fout

    config = fout.TorchImageModelConfig(
        {"model": em.module, "transforms": em.transform, "as_feature_extractor": True,
         "device": str(em.device)})
    return fout.TorchImageModel(config)


def _worker(args):
    """Runs one method in this process; prints a JSON line."""
    import torch

    torch.set_num_threads(args.threads)
    import fiftyone as fo

    import label_audit as la
    from label_audit.embeddings.models import load_model

    ds = fo.load_dataset(args.dataset)
    em = load_model(args.model, device="cpu")
    patches = args.mode == "patches"
    field = _field(args.method, args.mode)
    n_items = ds.count("ground_truth.detections") if patches else len(ds)
    t0 = time.perf_counter()
    if args.method == "fiftyone":
        model = _fiftyone_model(em)
        if patches:
            ds.compute_patch_embeddings(model, "ground_truth", embeddings_field=field,
                                        batch_size=args.batch_size,
                                        num_workers=args.num_workers, progress=False)
        else:
            ds.compute_embeddings(model, embeddings_field=field, batch_size=args.batch_size,
                                  num_workers=args.num_workers, progress=False)
    else:
        la.compute_embeddings(ds, model=em, embeddings_field=field,
                              patches_field="ground_truth" if patches else None,
                              batch_size=args.batch_size, num_workers=args.num_workers,
                              progress=False)
    seconds = time.perf_counter() - t0
    print(json.dumps({"method": args.method, "mode": args.mode, "items": n_items,
                      "seconds": seconds, "peak_rss_mb": _peak_rss_mb()}))
    return 0


def _field(method, mode):
    return "%s_%s" % (method.replace("-", "_"), mode)


def _vectors(ds, field, patches):
    if patches:
        vals = ds.values("ground_truth.detections.%s" % field, unwind=True)
    else:
        vals = ds.values(field)
    return np.stack([np.asarray(v, dtype=np.float64) for v in vals])


def _min_cosine(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(1).min())


def run(args):
    from label_audit.database import use_private_mongo

    use_private_mongo()
    import fiftyone as fo
    import torch

    tmp = tempfile.mkdtemp(prefix="label-audit-bench-emb-")
    n_total = max(args.images, args.patch_images)
    paths, boxes, labels = make_canvases(tmp, n_total)
    ds = fo.Dataset("bench-embeddings", persistent=True)
    ds.add_samples([
        fo.Sample(filepath=p, ground_truth=fo.Detections(detections=[
            fo.Detection(label=l, bounding_box=b) for b, l in zip(bb, ll)]))
        for p, bb, ll in zip(paths, boxes, labels)], progress=False)
    views = {"images": ds.limit(args.images), "patches": ds.limit(args.patch_images)}
    for mode, view in views.items():
        view.clone("bench-embeddings-%s" % mode, persistent=True)

    rows = []
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    for mode in ("images", "patches"):
        for method in ("fiftyone", "label-audit"):
            runs = []
            for _ in range(args.repeats):
                cmd = [sys.executable, "-m", "label_audit.benchmarks.embeddings",
                       "--worker", "--method", method, "--mode", mode,
                       "--dataset", "bench-embeddings-%s" % mode,
                       "--model", args.model, "--batch-size", str(args.batch_size),
                       "--num-workers", str(args.num_workers),
                       "--threads", str(args.threads)]
                out = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if out.returncode != 0:
                    raise RuntimeError("%s/%s failed:\n%s" % (method, mode, out.stderr[-3000:]))
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            best = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
            best["seconds_all"] = [r["seconds"] for r in runs]
            rows.append(best)
        mds = fo.load_dataset("bench-embeddings-%s" % mode)
        mds.reload()
        cos = _min_cosine(_vectors(mds, _field("fiftyone", mode), mode == "patches"),
                          _vectors(mds, _field("label-audit", mode), mode == "patches"))
        fo_row, la_row = rows[-2], rows[-1]
        for r in (fo_row, la_row):
            r["items_per_s"] = r["items"] / r["seconds"]
            r["speedup_vs_fiftyone"] = fo_row["seconds"] / r["seconds"]
            r["min_cosine_vs_fiftyone"] = cos
    result = {
        "model": args.model, "threads": args.threads, "cpu_count": os.cpu_count(),
        "num_workers": args.num_workers, "batch_size": args.batch_size,
        "torch": torch.__version__, "fiftyone": fo.__version__,
        "device": "cpu", "repeats": args.repeats, "rows": rows,
    }
    fo.delete_datasets("bench-embeddings*")
    return result


def format_table(result):
    lines = [
        "Embeddings benchmark: model=%s, device=%s, %d CPU cores, torch threads=%d, "
        "DataLoader workers=%d, batch=%d, median of %d run(s); torch %s, fiftyone %s"
        % (result["model"], result["device"], result["cpu_count"], result["threads"],
           result["num_workers"], result["batch_size"], result["repeats"], result["torch"],
           result["fiftyone"]),
        "%-8s %-12s %7s %9s %9s %12s %9s %11s" % (
            "mode", "method", "items", "seconds", "items/s", "peak RSS MB", "speedup",
            "min cosine"),
    ]
    for r in result["rows"]:
        lines.append("%-8s %-12s %7d %9.2f %9.1f %12.0f %8.2fx %11.5f" % (
            r["mode"], r["method"], r["items"], r["seconds"], r["items_per_s"],
            r["peak_rss_mb"], r["speedup_vs_fiftyone"], r["min_cosine_vs_fiftyone"]))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="label-audit bench embeddings", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--patch-images", type=int, default=40)
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    # internal: one method in a subprocess
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _worker(args)
    result = run(args)
    print(json.dumps(result, indent=1) if args.json else format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
