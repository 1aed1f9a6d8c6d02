"""SecAgg+ benchmark: client and gateway time over n, d and dropout, against the machine's own limits
(raw AES-CTR keystream rate, numpy uint32 add rate) and, optionally, Flower's SecAgg+ primitives.

    python bench/secagg.py [--quick] [--flower-python /tmp/flwr-venv/bin/python]

The whole cohort runs in one process through the real state machines (fl_protocol.secagg.simulate);
per-stage time is split between client code and gateway code with an injected perf_counter. The
gateway time is everything the gateway does: collecting/adding masked updates, reconstruction, mask
removal. The Flower column replays the same workload (same number of self masks, pairwise masks and
reconstructions as our run) with Flower's own helpers (Shamir, ECDH+HKDF, Fernet, pseudo_rand_gen).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fl_protocol.secagg import keys  # noqa: E402
from fl_protocol.secagg.cohort_view import recommended_degree  # noqa: E402
from fl_protocol.secagg.prg import MaskExpander  # noqa: E402
from fl_protocol.secagg.server import AggregateResult  # noqa: E402
from fl_protocol.secagg.simulate import Simulation  # noqa: E402

RING_BITS = 24


def measure_limits(dimension: int = 1_000_000, repeats: int = 20) -> dict[str, float]:
    """Raw AES-256-CTR keystream rate, our mask expansion and mask-add rates, numpy uint32 add rate."""
    key, nbytes = bytes(range(32)), 4 * dimension
    zeros, out = bytes(nbytes), bytearray(nbytes + 15)

    def best(action: object) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            action()  # type: ignore[operator]
            times.append(time.perf_counter() - start)
        return min(times)

    raw = best(lambda: Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update_into(zeros, out))
    expander = MaskExpander(dimension)
    expand = best(lambda: expander.keystream(key))
    acc = np.zeros(dimension, dtype=np.uint32)
    add_mask = best(lambda: expander.add_into(acc, key))
    other = np.ones(dimension, dtype=np.uint32)
    add = best(lambda: np.add(acc, other, out=acc))
    return {
        "aes_ctr_GBps": nbytes / raw / 1e9,
        "expand_GBps": nbytes / expand / 1e9,
        "expand_add_GBps": nbytes / add_mask / 1e9,
        "numpy_add_GBps": nbytes / add / 1e9,
    }


def run_case(n: int, dimension: int, dropout: float, seed: int) -> dict[str, Any]:
    """One full SecAgg+ round; returns per-client and gateway seconds and the workload counts."""
    # k: the default (≈ 2·log2 n) without dropout; with dropout, the degree that tolerates it (per-round
    # abort probability <= 1e-3 by the union bound) -- a 30%-dropout deployment must be configured so.
    degree = recommended_degree(n, dropout, failure_probability=1e-3) if dropout else None
    sim = Simulation(
        n=n,
        dimension=dimension,
        ring_bits=RING_BITS,
        seed=b"bench%d" % seed,
        clock=time.perf_counter,
        degree=degree,
    )
    rng = np.random.default_rng(seed)
    dropped = set(rng.choice(sim.node_ids, size=int(round(dropout * n)), replace=False).tolist())
    expected = np.zeros(dimension, dtype=np.uint64)

    def inputs(node: str) -> np.ndarray:
        values = rng.integers(0, 2**RING_BITS, dimension, dtype=np.uint32)
        np.add(expected, values, out=expected)
        return values

    start = time.perf_counter()
    result = sim.run(inputs, drop_before_upload=dropped)
    wall_s = time.perf_counter() - start
    assert isinstance(result, AggregateResult), result
    exact = bool(np.array_equal(result.values, (expected % 2**RING_BITS).astype(np.uint32)))
    cohort = sim.server.cohort
    assert cohort is not None
    survivors = set(result.survivors)
    pair_masks = sum(len(cohort.neighbours[d] & survivors) for d in result.dropped)
    t0 = time.perf_counter()
    for _ in range(20):
        keys.generate_key_pair()
        keys.generate_key_pair()
    keygen_s = (time.perf_counter() - t0) / 20
    sec = sim.seconds
    client = {
        "keys": keygen_s + sec["client/keys"] / n,
        "shares": sec["client/shares"] / n,
        "mask": sec["client/mask"] / max(1, n - len(dropped)),
        "unmask": (sec["client/consistency"] + sec["client/unmask"]) / max(1, len(survivors)),
    }
    gateway = {
        "collect": sec["server/collect"],
        "unmask": sec["server/unmask"],
        "total": sum(v for k, v in sec.items() if k.startswith("server/")),
    }
    return {
        "n": n,
        "d": dimension,
        "dropout": dropout,
        "k": cohort.degree,
        "t": cohort.threshold,
        "client_s": client,
        "gateway_s": gateway,
        "exact": exact,
        "wall_s": wall_s,
        "workload": {
            "survivors": len(survivors),
            "dropped": len(result.dropped),
            "pair_masks": pair_masks,
            "k": cohort.degree,
            "t": cohort.threshold,
            "d": dimension,
        },
    }


FLOWER_WORKER = r"""
import json, sys, time
import numpy as np
from flwr.common.secure_aggregation.crypto.shamir import create_shares, combine_shares
from flwr.common.secure_aggregation.crypto.symmetric_encryption import encrypt, generate_shared_key
from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen, share_keys_plaintext_concat
from flwr.supercore.primitives.asymmetric import (
    generate_key_pairs, private_key_to_bytes, bytes_to_private_key)

w = json.loads(sys.argv[1])
k, t, d, mod_range = w["k"], w["t"], w["d"], 1 << w["ring_bits"]
dims = [(d,)]
# --- one client: keys, shares, masking (Flower's secaggplus_mod steps) ---
start = time.perf_counter()
sk1, pk1 = generate_key_pairs(); sk2, pk2 = generate_key_pairs()
keys_s = time.perf_counter() - start
peers = [generate_key_pairs() for _ in range(k)]
start = time.perf_counter()
rd_seed = bytes(32)
b_shares = create_shares(rd_seed, t, k + 1)
sk_shares = create_shares(private_key_to_bytes(sk1), t, k + 1)
for i, (_, pk) in enumerate(peers):
    key = generate_shared_key(sk2, pk)
    encrypt(key, share_keys_plaintext_concat(0, i + 1, b_shares[i], sk_shares[i]))
shares_s = time.perf_counter() - start
x = np.zeros(d, dtype=np.int64)
start = time.perf_counter()
masked = x + pseudo_rand_gen(rd_seed, mod_range, dims)[0]
for i, (_, pk) in enumerate(peers):
    pm = pseudo_rand_gen(generate_shared_key(sk1, pk), mod_range, dims)[0]
    masked = masked + pm if i % 2 else masked - pm
masked %= mod_range
mask_s = time.perf_counter() - start
# --- gateway: the same workload as our run ---
start = time.perf_counter()
agg = np.zeros(d, dtype=np.int64)
for _ in range(w["survivors"]):
    agg = agg + masked
for _ in range(w["survivors"]):
    combine_shares(b_shares[:t])
    agg = agg - pseudo_rand_gen(rd_seed, mod_range, dims)[0]
pair_left = w["pair_masks"]
for j in range(w["dropped"]):
    sk = bytes_to_private_key(combine_shares(sk_shares[:t]))
    for _ in range(min(k, pair_left) if j < w["dropped"] - 1 else pair_left):
        pair_left -= 1
        agg = agg + pseudo_rand_gen(generate_shared_key(sk, pk2), mod_range, dims)[0]
agg %= mod_range
gateway_s = time.perf_counter() - start
print(json.dumps({"keys": keys_s, "shares": shares_s, "mask": mask_s, "gateway": gateway_s}))
"""


def run_flower(python: str, workload: dict[str, int]) -> dict[str, float] | None:
    """Replay `workload` with Flower's primitives in another interpreter; None if it fails."""
    payload = json.dumps({**workload, "ring_bits": RING_BITS})
    proc = subprocess.run(
        [python, "-c", FLOWER_WORKER, payload], capture_output=True, text=True, timeout=1800
    )
    if proc.returncode != 0:
        print(f"flower worker failed: {proc.stderr.strip()[-400:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="d = 1e5 and n <= 100 only (< 60 s)")
    parser.add_argument("--flower-python", help="interpreter of a venv with flwr installed")
    parser.add_argument(
        "--flower-max-n", type=int, default=100, help="replay Flower only up to this n (it is slow: minutes)"
    )
    parser.add_argument("--json", help="also write the raw results here")
    args = parser.parse_args()
    dims = [100_000] if args.quick else [100_000, 1_000_000]

    print(f"# SecAgg+ bench  {time.strftime('%Y-%m-%d')}  {platform.processor() or platform.machine()}")
    limits = measure_limits(repeats=5 if args.quick else 20)
    print(
        f"limits: AES-256-CTR keystream {limits['aes_ctr_GBps']:.2f} GB/s | our mask expansion "
        f"{limits['expand_GBps']:.2f} GB/s = {100 * limits['expand_GBps'] / limits['aes_ctr_GBps']:.0f}% of "
        f"keystream | expand+add {limits['expand_add_GBps']:.2f} GB/s | numpy uint32 add "
        f"{limits['numpy_add_GBps']:.2f} GB/s"
    )
    header = (
        "|     n |         d | drop |  k |  t | client keys ms | shares ms | mask ms | unmask ms "
        "| gateway unmask s | gateway total s | exact |"
    )
    if args.flower_python:
        header += " Flower client ms | Flower gateway s | ratio client | ratio gateway |"
    print(header)
    print("|" + "|".join("---" for _ in header.split("|")[1:-1]) + "|")
    results = []
    for dimension in dims:
        for n in (10, 100) if args.quick else (10, 100, 500):
            for dropout in (0.0, 0.3):
                row = run_case(n, dimension, dropout, seed=n + int(10 * dropout))
                results.append(row)
                c, g = row["client_s"], row["gateway_s"]
                line = (
                    f"| {n:5d} | {dimension:9,d} | {dropout:.0%} | {row['k']:2d} | {row['t']:2d} "
                    f"| {1e3 * c['keys']:14.2f} | {1e3 * c['shares']:9.2f} | {1e3 * c['mask']:7.1f} "
                    f"| {1e3 * c['unmask']:9.2f} | {g['unmask']:16.2f} | {g['total']:15.2f} "
                    f"| {row['exact']!s:5} |"
                )
                if args.flower_python and n <= args.flower_max_n:
                    flower = run_flower(args.flower_python, row["workload"])
                    row["flower_s"] = flower
                    if flower is not None:
                        ours_client = c["keys"] + c["shares"] + c["mask"]
                        theirs_client = flower["keys"] + flower["shares"] + flower["mask"]
                        line += (
                            f" {1e3 * theirs_client:16.1f} | {flower['gateway']:16.2f} "
                            f"| {theirs_client / ours_client:11.1f}x "
                            f"| {flower['gateway'] / g['total']:12.1f}x |"
                        )
                print(line, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"limits": limits, "results": results}, indent=1))


if __name__ == "__main__":
    main()
