"""Train the demo octopi-format UNet on synthetic CZII-like tomograms, on the CPU.

Writes ``configs/models/demo_unet.yaml`` (octopi model config: ``model:`` + ``labels:``) and
``configs/models/demo_unet.pth`` (state_dict), loadable by ``pipeline.models.load_ensemble`` and by octopi.

Deterministic: data come from ``pipeline.synthetic.synth_run_arrays`` with fixed seeds, crops and
augmentations from one seeded generator, weights from ``torch.manual_seed``; a fixed number of steps
(no wall-clock stopping). Same torch build and thread count -> same weights.

    python scripts/train_demo_model.py                    # ~17 min on 2 cores
    python scripts/train_demo_model.py --evaluate-only    # score the shipped model on fresh runs

Evaluation segments fresh synthetic runs (seeds never used in training) with ``pipeline.segment`` and, when
localization and evaluation are available, reports octopi's F-beta (beta 4) after watershed localization.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.synthetic import CZII_OBJECTS, synth_run_arrays  # noqa: E402

log = logging.getLogger("train_demo_model")

MODEL = {
    "architecture": "Unet",
    "num_classes": 7,
    "dim_in": 64,
    "channels": [16, 32, 64, 128],
    "strides": [2, 2, 2],
    "num_res_units": 1,
    "dropout": 0.1,
}
LABELS = {o["name"]: int(o["label"]) for o in CZII_OBJECTS}

TRAIN_SHAPE = (96, 192, 192)
TRAIN_SEEDS = list(range(1000, 1012))
TRAIN_DENSITY = (1.0, 2.0, 3.0)  # more particles per volume than CZII: more positives per crop
TRAIN_SNR = (1.5, 2.0, 3.0)
EVAL_SEEDS = (77001, 77002, 77003, 77004)
# beta-galactosidase (3) and thyroglobulin (5) carry weight 2 in the CZII score and are the classes the network
# confuses with each other: crops centre on them twice as often, and the loss weighs them twice
CLASS_WEIGHT = {3: 2.0, 5: 2.0}
EVAL_SHAPE = (96, 200, 200)


def normalise(volume: np.ndarray) -> np.ndarray:
    return ((volume - volume.mean()) / max(float(volume.std()), 1e-6)).astype(np.float32)


def make_training_set():
    data = []
    for i, seed in enumerate(TRAIN_SEEDS):
        tomo, label_map, _ = synth_run_arrays(
            TRAIN_SHAPE, seed=seed, snr=TRAIN_SNR[i % len(TRAIN_SNR)], density=TRAIN_DENSITY[i % len(TRAIN_DENSITY)]
        )
        data.append((normalise(tomo), label_map))
    return data


def sample_batch(data, rng: np.random.Generator, batch: int, side: int):
    """Crops of side^3: 3/4 centred near a voxel of a present class (drawn by CLASS_WEIGHT), 1/4 uniform; random flips / rot90 (y, x)."""
    xs, ys = [], []
    for _ in range(batch):
        tomo, label_map = data[rng.integers(len(data))]
        shape = np.array(tomo.shape)
        if rng.random() < 3 / 4:
            # class-balanced (as MONAI RandCropByLabelClasses): pick a class present, then one of its voxels
            present = np.flatnonzero(np.bincount(label_map.reshape(-1), minlength=MODEL["num_classes"])[1:]) + 1
            p = np.array([CLASS_WEIGHT.get(int(c), 1.0) for c in present])
            fg = np.flatnonzero(label_map == present[rng.choice(len(present), p=p / p.sum())])
            centre = np.array(np.unravel_index(fg[rng.integers(len(fg))], tomo.shape))
            centre = centre + rng.integers(-side // 4, side // 4 + 1, size=3)
            start = np.clip(centre - side // 2, 0, shape - side)
        else:
            start = np.array([rng.integers(0, s - side + 1) for s in shape])
        box = tuple(slice(int(a), int(a) + side) for a in start)
        x, y = tomo[box], label_map[box]
        for axis in range(3):
            if rng.random() < 0.5:
                x, y = np.flip(x, axis), np.flip(y, axis)
        k = int(rng.integers(4))
        x, y = np.rot90(x, k, axes=(1, 2)), np.rot90(y, k, axes=(1, 2))
        xs.append(np.ascontiguousarray(x))
        ys.append(np.ascontiguousarray(y))
    return torch.from_numpy(np.stack(xs))[:, None], torch.from_numpy(np.stack(ys).astype(np.int64))[:, None]


def train(args) -> None:
    from monai.losses import DiceCELoss
    from monai.networks.nets import UNet

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    data = make_training_set()
    log.info("training set: %d volumes of %s in %.1fs", len(data), TRAIN_SHAPE, time.perf_counter() - t0)

    net = UNet(3, 1, MODEL["num_classes"], tuple(MODEL["channels"]), tuple(MODEL["strides"]),
               num_res_units=MODEL["num_res_units"], dropout=MODEL["dropout"])
    class_weight = torch.tensor([CLASS_WEIGHT.get(c, 1.0) for c in range(MODEL["num_classes"])])
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, include_background=True, weight=class_weight)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    net.train()
    running = 0.0
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        x, y = sample_batch(data, rng, args.batch, args.crop)
        loss = loss_fn(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running += float(loss.detach())
        if step % 50 == 0:
            log.info("step %d/%d loss %.4f (%.0fs)", step, args.steps, running / 50, time.perf_counter() - t0)
            running = 0.0
    net.eval()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / f"{args.name}.pth"
    torch.save({k: v.detach().cpu().clone() for k, v in net.state_dict().items()}, weights)
    doc = {
        "model": dict(MODEL),
        "labels": dict(LABELS),
        "training": {
            "script": "scripts/train_demo_model.py",
            "data": f"pipeline.synthetic.synth_run_arrays shape {list(TRAIN_SHAPE)}, seeds {TRAIN_SEEDS[0]}.."
                    f"{TRAIN_SEEDS[-1]}, snr {list(TRAIN_SNR)}, density {list(TRAIN_DENSITY)}",
            "loss": f"DiceCELoss(softmax, to_onehot_y, weight {class_weight.tolist()})",
            "crops": f"3/4 centred on a present class drawn with weights {CLASS_WEIGHT} (others 1), 1/4 uniform",
            "optimizer": f"AdamW lr {args.lr} one-cycle, {args.steps} steps, batch {args.batch}, crop {args.crop}",
            "seed": args.seed,
            "torch": str(torch.__version__),
            "seconds": round(time.perf_counter() - t0, 1),
        },
    }
    config = out / f"{args.name}.yaml"
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    log.info("wrote %s and %s (%.1f MB) after %.0fs", config, weights, weights.stat().st_size / 1e6,
             time.perf_counter() - t0)


def evaluate(args) -> None:
    """Segment fresh synthetic runs; Dice per class, and octopi's F-beta after watershed localization."""
    from pipeline.config import SegmentConfig
    from pipeline.evaluate import ZERO, final_score, object_fbeta, score_object
    from pipeline.localize import localize
    from pipeline.models import load_ensemble
    from pipeline.objects import ParticleObject
    from pipeline.segment import segment_volume

    out = Path(args.out)
    ens = load_ensemble(str(out / f"{args.name}.yaml"), str(out / f"{args.name}.pth"), device="cpu")
    objects = [ParticleObject(o["name"], o["label"], o["radius"], o["weight"]) for o in CZII_OBJECTS]
    totals = {mode: {o.name: ZERO for o in objects} for mode in args.modes}
    for seed in EVAL_SEEDS:
        tomo, truth, centers = synth_run_arrays(EVAL_SHAPE, seed=seed)
        maps = {}
        for mode in args.modes:
            t0 = time.perf_counter()
            label_map = segment_volume(tomo, ens, SegmentConfig(mode=mode, ntta=4), device="cpu").label_map.numpy()
            maps[mode] = label_map
            dice = {}
            for o in objects:
                a, b = label_map == o.label, truth == o.label
                dice[o.name] = round(float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1)), 3)
            log.info("seed %d %s: %.1fs, dice %s", seed, mode, time.perf_counter() - t0, dice)
            picks = localize(label_map, objects, 10.0, method="watershed", backend="reference")
            for o in objects:
                counts = score_object(picks[o.name].centers_zyx_vox, centers[o.name], o.radius / 10.0)
                totals[mode][o.name] = totals[mode][o.name] + counts
        if len(maps) > 1:
            a, b = maps.values()
            log.info("seed %d: %s vs %s voxel agreement %.5f", seed, *maps, float((a == b).mean()))
    weights = {o.name: o.weight for o in objects}
    for mode in args.modes:
        for o in objects:
            c = totals[mode][o.name]
            log.info("%s %s: tp %d fp %d fn %d F-beta %.3f (weight %g)", mode, o.name, c.tp, c.fp, c.fn,
                     object_fbeta(c)[2], o.weight)
        log.info("%s: octopi-rule weighted F-beta (beta 4) on seeds %s: %.4f", mode, EVAL_SEEDS,
                 final_score(totals[mode], weights))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(REPO / "configs" / "models"))
    p.add_argument("--name", default="demo_unet")
    p.add_argument("--steps", type=int, default=2200)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--evaluate-only", action="store_true")
    p.add_argument("--no-evaluate", action="store_true")
    p.add_argument("--modes", default="fast,compat", type=lambda s: s.split(","))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if not args.evaluate_only:
        train(args)
    if not args.no_evaluate:
        evaluate(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
