"""Reading and writing ``FANN_FLO_2.1`` network files (and reading ``FANN_FIX_2.0``).

The parser keeps every header key, in order, so a file read and written again is
unchanged, and checks each value before the network is built: a truncated,
reordered or absurd file is rejected with an error naming the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import FannFormatError

MAX_NEURONS = 10_000_000
MAX_CONNECTIONS = 100_000_000

#: Header keys of FANN_FLO_2.1, in the order libfann writes them.
HEADER_KEYS = [
    "num_layers", "learning_rate", "connection_rate", "network_type", "learning_momentum",
    "training_algorithm", "train_error_function", "train_stop_function", "cascade_output_change_fraction",
    "quickprop_decay", "quickprop_mu", "rprop_increase_factor", "rprop_decrease_factor", "rprop_delta_min",
    "rprop_delta_max", "rprop_delta_zero", "cascade_output_stagnation_epochs",
    "cascade_candidate_change_fraction", "cascade_candidate_stagnation_epochs", "cascade_max_out_epochs",
    "cascade_min_out_epochs", "cascade_max_cand_epochs", "cascade_min_cand_epochs",
    "cascade_num_candidate_groups", "bit_fail_limit", "cascade_candidate_limit", "cascade_weight_multiplier",
    "cascade_activation_functions_count", "cascade_activation_functions",
    "cascade_activation_steepnesses_count", "cascade_activation_steepnesses", "layer_sizes", "scale_included",
]
INT_KEYS = {"num_layers", "network_type", "training_algorithm", "train_error_function", "train_stop_function",
            "cascade_output_stagnation_epochs", "cascade_candidate_stagnation_epochs", "cascade_max_out_epochs",
            "cascade_min_out_epochs", "cascade_max_cand_epochs", "cascade_min_cand_epochs",
            "cascade_num_candidate_groups", "cascade_activation_functions_count",
            "cascade_activation_steepnesses_count", "scale_included"}
LIST_KEYS = {"cascade_activation_functions": int, "cascade_activation_steepnesses": float, "layer_sizes": int}
#: Written with "%f" by libfann (float parameters); the rest with "%.20e".
PLAIN_FLOAT_KEYS = {"learning_rate", "connection_rate", "learning_momentum", "cascade_output_change_fraction",
                    "quickprop_decay", "quickprop_mu", "rprop_increase_factor", "rprop_decrease_factor",
                    "rprop_delta_min", "rprop_delta_max", "rprop_delta_zero", "cascade_candidate_change_fraction"}
SCALE_KEYS = ["scale_mean_in", "scale_deviation_in", "scale_new_min_in", "scale_factor_in",
              "scale_mean_out", "scale_deviation_out", "scale_new_min_out", "scale_factor_out"]

_PAIR3 = re.compile(r"\(\s*([^,()]+),\s*([^,()]+),\s*([^,()]+)\)")
_PAIR2 = re.compile(r"\(\s*([^,()]+),\s*([^,()]+)\)")


@dataclass
class FannFile:
    header: dict[str, object]
    neurons: list[tuple[int, int, float]]          # (num_inputs, activation, steepness)
    connections: list[tuple[int, float]]            # (connected_to_neuron, weight)
    scale: dict[str, list[float]] = field(default_factory=dict)
    fixed_decimal_point: int | None = None


def _number(key: str, text: str, kind: type) -> object:
    try:
        return kind(text)
    except ValueError:
        raise FannFormatError(key, f"{text!r} is not a valid {kind.__name__}") from None


def parse(text: str) -> FannFile:
    lines = text.splitlines()
    if not lines:
        raise FannFormatError("version", "empty file")
    version = lines[0].strip()
    fixed = version == "FANN_FIX_2.0"
    if version not in ("FANN_FLO_2.1", "FANN_FIX_2.0"):
        raise FannFormatError("version", f"unsupported format {version[:40]!r} (need FANN_FLO_2.1 or FANN_FIX_2.0)")
    pos = 1
    decimal_point = None
    if fixed:
        if pos >= len(lines) or not lines[pos].startswith("decimal_point="):
            raise FannFormatError("decimal_point", "missing after FANN_FIX_2.0")
        decimal_point = _number("decimal_point", lines[pos].split("=", 1)[1].strip(), int)
        if not 0 <= decimal_point <= 30:
            raise FannFormatError("decimal_point", f"{decimal_point} out of range")
        pos += 1
    header: dict[str, object] = {}
    # FANN_FIX_2.0 has no scale_included line and stores these as fixed-point integers.
    keys = [k for k in HEADER_KEYS if not (fixed and k == "scale_included")]
    fixed_point = {"bit_fail_limit", "cascade_candidate_limit", "cascade_weight_multiplier"}
    for key in keys:
        if pos >= len(lines):
            raise FannFormatError(key, "file ends before this key")
        name, sep, value = lines[pos].partition("=")
        if name != key or not sep:
            raise FannFormatError(key, f"expected '{key}=' on line {pos + 1}, found {lines[pos][:40]!r}")
        if key in LIST_KEYS:
            kind = int if fixed and key == "cascade_activation_steepnesses" else LIST_KEYS[key]
            header[key] = [_number(key, v, kind) for v in value.split()]
        else:
            header[key] = _number(key, value.strip(), int if key in INT_KEYS or fixed and key in fixed_point else float)
        pos += 1
    if fixed:
        header["scale_included"] = 0
    num_layers = header["num_layers"]
    sizes = header["layer_sizes"]
    if not 2 <= num_layers <= 1000 or len(sizes) != num_layers:
        raise FannFormatError("layer_sizes", f"{len(sizes)} sizes for num_layers={num_layers}")
    if any(s <= 0 for s in sizes) or sum(sizes) > MAX_NEURONS:
        raise FannFormatError("layer_sizes", f"absurd layer sizes {sizes[:10]}")
    if header["network_type"] not in (0, 1):
        raise FannFormatError("network_type", f"{header['network_type']} is neither 0 (layer) nor 1 (shortcut)")
    scale: dict[str, list[float]] = {}
    if header["scale_included"]:
        for key in SCALE_KEYS:
            if pos >= len(lines):
                raise FannFormatError(key, "file ends before this key")
            name, sep, value = lines[pos].partition("=")
            if name != key:
                raise FannFormatError(key, f"expected '{key}=' on line {pos + 1}")
            scale[key] = [_number(key, v, float) for v in value.split()]
            pos += 1
    total = sum(sizes)
    key = "neurons (num_inputs, activation_function, activation_steepness)"
    if pos >= len(lines) or not lines[pos].startswith(key + "="):
        raise FannFormatError("neurons", "missing neuron list")
    raw = _PAIR3.findall(lines[pos].split("=", 1)[1])
    if len(raw) != total:
        raise FannFormatError("neurons", f"{len(raw)} neurons listed, layer_sizes say {total}")
    num = float if not fixed else int
    neurons = [(_number("neurons", a, int), _number("neurons", b, int), _number("neurons", c, num)) for a, b, c in raw]
    for n_in, act, _ in neurons:
        if n_in < 0 or n_in > total or not 0 <= act <= 17:
            raise FannFormatError("neurons", f"neuron entry ({n_in}, {act}) out of range")
    pos += 1
    key = "connections (connected_to_neuron, weight)"
    if pos >= len(lines) or not lines[pos].startswith(key + "="):
        raise FannFormatError("connections", "missing connection list")
    raw2 = _PAIR2.findall(lines[pos].split("=", 1)[1])
    expected = sum(n for n, _, _ in neurons)
    if len(raw2) != expected or expected > MAX_CONNECTIONS:
        raise FannFormatError("connections", f"{len(raw2)} connections listed, neurons declare {expected}")
    connections = [(_number("connections", a, int), _number("connections", b, num)) for a, b in raw2]
    for src, _ in connections:
        if not 0 <= src < total:
            raise FannFormatError("connections", f"neuron index {src} out of range 0..{total - 1}")
    if fixed:  # fixed point: scale everything to floats
        mult = float(1 << decimal_point)
        neurons = [(n, a, s / mult) for n, a, s in neurons]
        connections = [(c, w / mult) for c, w in connections]
        for key in fixed_point:
            header[key] = header[key] / mult
        header["cascade_activation_steepnesses"] = [v / mult for v in header["cascade_activation_steepnesses"]]
    return FannFile(header, neurons, connections, scale, decimal_point)


def _fmt_float(key: str, value: float) -> str:
    return f"{value:f}" if key in PLAIN_FLOAT_KEYS else f"{value:.20e}"


def render(f: FannFile) -> str:
    out = ["FANN_FLO_2.1"]
    for key in HEADER_KEYS:
        value = f.header[key]
        if key in LIST_KEYS:
            fmt = (lambda v: f"{v:.20e}") if LIST_KEYS[key] is float else str
            out.append(f"{key}=" + "".join(fmt(v) + " " for v in value))
        elif key in INT_KEYS:
            out.append(f"{key}={int(value)}")
        else:
            out.append(f"{key}={_fmt_float(key, float(value))}")
    if f.header["scale_included"]:
        for key in SCALE_KEYS:
            out.append(f"{key}=" + "".join(f"{v:f} " for v in f.scale[key]))  # libfann writes %f here
    out.append("neurons (num_inputs, activation_function, activation_steepness)="
               + "".join(f"({n}, {a}, {s:.20e}) " for n, a, s in f.neurons))
    out.append("connections (connected_to_neuron, weight)="
               + "".join(f"({c}, {w:.20e}) " for c, w in f.connections))
    return "\n".join(out) + "\n"
