"""What the head is fed: ImageNet's own class probabilities, logged and grouped, or the pooled features.

A head trained on 181 studio photos keys on whatever separates them (sports-car gloss,
say) and that does not carry over to other cameras.  ImageNet's classifier already knows
buses and cars from many cameras and scenes, so by default (a backbone with its ImageNet
top) the head sees the log of each of the 1,000 class probabilities plus a few vehicle
groups: the log of each group's total probability, of what is left over, and each
group's share of the vehicle probability.  On vehicles-check (another country, phone
photos) this took the AUC from 0.948 to 0.998 with the head trained on vehicles-dev alone.

The features are computed inside the Keras model, so the exported ONNX backbone's
``features`` output is exactly the head's input: the function needs no extra step, and
the parity check and the feature cache cover them as before.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shared.manifest import HeadInputDoc

POOLED = "pooled"
IMAGENET_GROUPS = "imagenet_groups"
KINDS = ("auto", POOLED, IMAGENET_GROUPS)
VERSION = 1  # bump when the features change: it is part of the feature-cache namespace
FLOOR = 1e-6  # log(0) guard; below any probability that matters

# ImageNet-1k class indices (fixed by the dataset) and names, grouped by what a traffic camera sees.
GROUPS: dict[str, tuple[tuple[int, str], ...]] = {
    "bus": ((654, "minibus"), (705, "passenger_car"), (757, "recreational_vehicle"), (779, "school_bus"),
            (829, "streetcar"), (874, "trolleybus")),
    "car": ((436, "beach_wagon"), (468, "cab"), (475, "car_mirror"), (479, "car_wheel"), (511, "convertible"),
            (573, "go-kart"), (575, "golfcart"), (581, "grille"), (609, "jeep"), (627, "limousine"),
            (656, "minivan"), (661, "Model_T"), (751, "racer"), (817, "sports_car")),
    "truck": ((407, "ambulance"), (555, "fire_engine"), (561, "forklift"), (569, "garbage_truck"),
              (586, "half_track"), (660, "mobile_home"), (675, "moving_van"), (717, "pickup"), (730, "plow"),
              (734, "police_van"), (803, "snowplow"), (864, "tow_truck"), (866, "tractor"), (867, "trailer_truck")),
    "two_wheeler": ((444, "bicycle-built-for-two"), (665, "moped"), (670, "motor_scooter"), (671, "mountain_bike"),
                    (870, "tricycle"), (880, "unicycle")),
    "rail": ((466, "bullet_train"), (547, "electric_locomotive"), (565, "freight_car"), (820, "steam_locomotive")),
}
N_IMAGENET = 1000


def resolve(kind: str, has_top: bool) -> str:
    """``auto`` means the ImageNet groups when the backbone has its top, else the pooled features."""
    if kind == "auto":
        return IMAGENET_GROUPS if has_top else POOLED
    return kind


def group_matrix() -> np.ndarray:
    """(1000, n_groups) 0/1 matrix: probabilities @ matrix = each group's total probability."""
    matrix = np.zeros((N_IMAGENET, len(GROUPS)), dtype=np.float32)
    for j, members in enumerate(GROUPS.values()):
        matrix[[i for i, _ in members], j] = 1.0
    return matrix


def dim(kind: str, pooled_dim: int) -> int:
    return pooled_dim if kind == POOLED else N_IMAGENET + 2 * len(GROUPS) + 1


def describe(kind: str, pooled_dim: int) -> HeadInputDoc:
    groups = {} if kind == POOLED else {g: [name for _, name in members] for g, members in GROUPS.items()}
    return {"kind": kind, "dim": dim(kind, pooled_dim), "groups": groups}


def keras_features(keras: Any, probs: Any) -> Any:
    """The head's input from ImageNet probabilities, as Keras ops (so it exports to ONNX with the backbone)."""
    ops = keras.ops
    groups = ops.matmul(probs, ops.convert_to_tensor(group_matrix()))
    vehicles = ops.sum(groups, axis=-1, keepdims=True)
    other = 1.0 - vehicles
    parts = [probs, groups, other, groups / ops.maximum(vehicles, FLOOR)]
    return ops.concatenate([ops.log(ops.clip(p, FLOOR, 1.0)) for p in parts], axis=-1)


def numpy_features(probs: np.ndarray) -> np.ndarray:
    """The same as :func:`keras_features`, in numpy (tests and experiments on cached probabilities)."""
    groups = probs @ group_matrix()
    vehicles = groups.sum(axis=1, keepdims=True)
    parts = [probs, groups, 1.0 - vehicles, groups / np.maximum(vehicles, FLOOR)]
    return np.concatenate([np.log(np.clip(p, FLOOR, 1.0)) for p in parts], axis=1).astype(np.float32)
