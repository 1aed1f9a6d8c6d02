"""The demo's report pieces: presets per model, perplexity, the privacy statement, prompts, the summary."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pytest

from fedlora.corpus import CorpusRecord
from fedlora.demo import cli as demo_cli
from fedlora.demo.completions import pick_prompts
from fedlora.demo.configs import DemoSettings
from fedlora.demo.finish import privacy_statement, summary_lines
from fedlora.demo.presets import REAL, TINY, preset_for
from fedlora.demo.report import perplexity


def _settings(**kw: object) -> DemoSettings:
    return DemoSettings(rounds=3, gateways=("g1",), total_devices=4, **kw)  # type: ignore[arg-type]


def test_real_model_is_the_command_line_default() -> None:
    parser = argparse.ArgumentParser()
    demo_cli.add_arguments(parser)
    args = parser.parse_args([])
    assert args.model == "smollm2-135m" and args.broker == "auto" and args.http_port is None
    assert preset_for(args.model) is REAL and preset_for("tiny-llama") is TINY
    assert preset_for("/models/x.gguf") is REAL
    assert (REAL.devices, REAL.gateways, REAL.rounds, REAL.seq_len) == (4, 1, 3, 128)


def test_perplexity_is_exp_of_the_loss() -> None:
    assert perplexity(None) is None
    assert perplexity(math.log(34.0)) == pytest.approx(34.0)
    assert perplexity(1e6) == math.inf


def test_privacy_statement_says_no_noise_for_the_public_default() -> None:
    statement = privacy_statement(
        _settings(**{k: v for k, v in REAL.settings.items() if k != "stage_timeouts_s"}), None, 3
    )
    assert statement["mechanism"] == "none" and statement["epsilon"] is None
    assert (
        "tier 'public': no DP noise" in statement["statement"]
        and "epsilon = infinity" in statement["statement"]
    )


def test_privacy_statement_gives_epsilon_at_delta_when_noisy() -> None:
    statement = privacy_statement(
        _settings(mechanism="skellam", noise_multiplier=0.7, tier="personal"), 41.5, 3
    )
    assert statement["epsilon"] == 41.5 and statement["mechanism"] == "skellam"
    assert (
        "tier 'personal': user-level DP, epsilon = 41.50 at delta = 1e-05 after 3 rounds"
        in statement["statement"]
    )


def _record(name: str, family: str, tier: str = "public") -> CorpusRecord:
    text = f"{name}\n\n" + " ".join(f"word{i}" for i in range(20))
    return CorpusRecord(text, tier, name.split(".")[0], family, name)


def test_prompts_are_fixed_one_per_family_of_the_tier() -> None:
    records = [
        _record("b.f", "text"),
        _record("a.g", "text"),
        _record("c.h", "files", tier="health"),
        _record("d.i", "numbers"),
        _record("e.j", "files"),
        _record("f.k", "language"),
    ]
    prompts = pick_prompts(list(reversed(records)), tier="public")
    assert prompts == [
        "a.g\n\nword0 word1 word2 word3 word4 word5",
        "d.i\n\nword0 word1 word2 word3 word4 word5",
        "e.j\n\nword0 word1 word2 word3 word4 word5",
    ]


def test_summary_lists_every_version_privacy_and_completions() -> None:
    rounds = [
        {
            "new_version": v,
            "eval_loss": 3.5 - 0.1 * v,
            "eval_perplexity": math.exp(3.5 - 0.1 * v),
            "train_loss": 3.4,
            "survivors": 3,
            "online": 4,
            "epsilon": None,
        }
        for v in (1, 2, 3)
    ]
    final = {
        "initial_eval_loss": 3.5,
        "initial_eval_perplexity": math.exp(3.5),
        "eval_loss": 3.2,
        "relative_improvement": 0.3 / 3.5,
        "privacy": {"statement": "tier 'public': no DP noise"},
        "completions": [{"prompt": "p", "before": "b", "after": "a"}],
    }
    text = "\n".join(summary_lines(rounds, final))
    assert "base" in text and "v3" in text and "8.6% below the base model" in text
    assert "privacy: tier 'public': no DP noise" in text and "before: 'b'" in text and "after:  'a'" in text


def test_real_preset_uses_the_smallest_ring_for_its_devices(tmp_path: Path) -> None:
    from fedlora.demo.runner import DemoOptions, _settings

    def ring(devices: int) -> tuple[int, int]:
        options = DemoOptions(devices=devices, gateways=1, model="smollm2-135m", cache_dir=tmp_path)
        settings = _settings(options, ["g1"], lambda _line: None)
        return settings.quant_bits, settings.ring_bits

    assert ring(4) == (7, 9)  # 4 devices' 7-bit values: 7 + log2(4) bits, no DP noise
    assert ring(9) == (7, 11)
    tiny = _settings(DemoOptions(cache_dir=tmp_path), ["g1", "g2"], lambda _line: None)
    assert (tiny.quant_bits, tiny.ring_bits) == (10, 32)  # the tiny demo keeps its DP-sized ring
