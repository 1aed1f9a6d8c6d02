"""Greedy completions of fixed held-out prompts, before and after federation (the demo's visible result).

The prompts are three held-out docstrings (the first three of the evaluated tier, by qualified name, from
different module families): the name line, a blank line and the first words of the docstring. The same
PEFT adapter the demo writes is loaded onto the base model with `PeftModel.from_pretrained`; "before" is
the base model (adapter disabled), "after" the adapted one. Greedy decoding (no sampling): reruns agree.
Decoding runs on one intra-op thread when the machine is already busy (`machine_load.compute_threads`).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_runtime.text_tokenizer import load_tokenizer
from fedlora.corpus import CorpusRecord
from fedlora.demo.machine_load import compute_threads
from fl_protocol.manifest import load_manifest

PROMPT_COUNT = 3
PROMPT_WORDS = 6


def pick_prompts(records: Sequence[CorpusRecord], *, tier: str, count: int = PROMPT_COUNT) -> list[str]:
    """`count` prompts from held-out records of `tier`, one per family, in qualified-name order."""
    chosen: list[str] = []
    families: set[str] = set()
    for record in sorted((r for r in records if r.tier == tier), key=lambda r: (r.source, r.name)):
        if record.family in families:
            continue
        head, _, body = record.text.partition("\n\n")
        words = body.split()
        if len(words) < PROMPT_WORDS * 2:
            continue
        families.add(record.family)
        chosen.append(f"{head}\n\n{' '.join(words[:PROMPT_WORDS])}")
        if len(chosen) == count:
            break
    return chosen


def greedy_completions(
    bundle_dir: Path, adapter_dir: Path, prompts: Sequence[str], *, new_tokens: int
) -> list[dict[str, Any]]:
    """[{"prompt", "before", "after"}] with `new_tokens` greedy tokens each (base vs base + adapter)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as transformers_logging

    manifest = load_manifest(bundle_dir)
    tokenizer = load_tokenizer(manifest.tokenizer_spec, bundle_dir)
    base_path = json.loads((adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
    transformers_logging.set_verbosity_error()  # generation-config notices are not the user's concern
    transformers_logging.disable_progress_bar()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
        model = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    results = []
    threads = torch.get_num_threads()
    torch.set_num_threads(compute_threads(threads))  # one thread on a busy machine: 10x faster there
    try:
        for prompt in prompts:
            ids = torch.tensor([[tokenizer.bos_id, *tokenizer.encode(prompt)]])
            with model.disable_adapter():
                before = _greedy(model, ids, new_tokens, tokenizer.eos_id)
            after = _greedy(model, ids, new_tokens, tokenizer.eos_id)
            results.append(
                {"prompt": prompt, "before": tokenizer.decode(before), "after": tokenizer.decode(after)}
            )
    finally:
        torch.set_num_threads(threads)
    return results


def _greedy(model: Any, ids: Any, new_tokens: int, eos_id: int) -> list[int]:
    import torch

    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new_tokens,
            do_sample=False,
            eos_token_id=eos_id,
            pad_token_id=eos_id,
        )
    return [int(t) for t in out[0, ids.shape[1] :] if int(t) != eos_id]
