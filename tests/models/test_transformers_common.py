"""transformers' own common model tests, run against Wonton as if it were an in-tree model.

The suite lives in `../shared/transformers-tests` (transformers' test files, see its README for the exact
versions); it is never copied into this project. Its files form a package named `tests` with relative
imports, which would clash with our own `tests` package, so it is imported here under another name
(`hf_common_tests`). Without `../shared` (`$WONTON_SHARED`, see tests/paths.py) this module skips.

What an in-tree model gets for free and we add here, for the tests to judge Wonton like one:
- the model type in `MODEL_MAPPING_NAMES` / `MODEL_FOR_CAUSAL_LM_MAPPING_NAMES` (the common tests pick a
  class's role from these static tables; `AutoModel.register` does not fill them);
- `_TEXT_MODEL_TESTER_DEFAULTS` on `transformers.testing_utils`, which the suite's `causal_lm_tester.py`
  (transformers main, August 2026) imports and the 5.24 wheel lacks; the suite's own conftest sets the same
  values, but importing that conftest would also silence every FutureWarning of our session.

Every skip below carries its reason; a skip must name a feature the architecture does not have, never a
defect (GPT-NeoX, run through the same files, is the control: see the README's "Conformance" section).
"""

from __future__ import annotations

import importlib.util
import sys
import unittest
from pathlib import Path

import pytest

from ..paths import SHARED  # noqa: E402

SUITE = SHARED / "transformers-tests"
if not (SUITE / "tests" / "test_modeling_common.py").is_file():
    pytest.skip(f"transformers' common model tests not found at {SUITE} (set $WONTON_SHARED)", allow_module_level=True)
pytest.importorskip("parameterized", reason="the common tests need `parameterized` (in the dev extra)")

import transformers  # noqa: E402
import transformers.testing_utils as _testing_utils  # noqa: E402
import transformers.utils as transformers_utils  # noqa: E402
from transformers.models.auto import modeling_auto  # noqa: E402

import wonton_hf  # noqa: E402, F401  (registers the Auto classes)
from wonton_hf import WontonConfig, WontonForCausalLM, WontonModel  # noqa: E402

PACKAGE = "hf_common_tests"

# The values the suite's own conftest sets (copied there from transformers main at its commit).
_TEXT_DEFAULTS = {
    "batch_size": 13, "seq_length": 7, "is_training": True, "use_input_mask": True, "use_labels": True,
    "vocab_size": 99, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
    "num_key_value_heads": 2, "intermediate_size": 32, "hidden_act": "gelu", "max_position_embeddings": 512,
    "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "expert_interval": 1, "moe_layer_start_index": 0,
    "moe_intermediate_size": 16, "shared_expert_intermediate_size": 36, "shared_expert_gate": True,
    "moe_num_shared_experts": 2, "num_experts_per_tok": 2, "num_experts": 8,
}  # fmt: skip
if not hasattr(_testing_utils, "_TEXT_MODEL_TESTER_DEFAULTS"):
    _testing_utils._TEXT_MODEL_TESTER_DEFAULTS = _TEXT_DEFAULTS


def _import_suite() -> None:
    if PACKAGE in sys.modules:
        return
    # `test_pipeline_mixin.py` imports transformers from `src/transformers` beside the suite (transformers'
    # own checkout layout); the suite's README says a link to the installed package satisfies it. We cannot
    # write into ../shared, so the import of a missing source tree resolves to the installed package instead.
    original_import = transformers_utils.direct_transformers_import

    def direct_transformers_import(path: str, file: str = "__init__.py"):
        if not (Path(path) / file).is_file():
            return transformers
        return original_import(path, file)

    transformers_utils.direct_transformers_import = direct_transformers_import
    spec = importlib.util.spec_from_file_location(
        PACKAGE, SUITE / "tests" / "__init__.py", submodule_search_locations=[str(SUITE / "tests")]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = module
    spec.loader.exec_module(module)
    # One absolute import in the suite (`from tests.exporters.test_export import ...` in
    # generation/test_utils.py) names its own package: point that name at the suite's module.
    export = importlib.import_module(f"{PACKAGE}.exporters.test_export")
    sys.modules.setdefault("tests.exporters", sys.modules[f"{PACKAGE}.exporters"])
    sys.modules.setdefault("tests.exporters.test_export", export)


_import_suite()
modeling_auto.MODEL_MAPPING_NAMES.setdefault("wonton", "WontonModel")
modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.setdefault("wonton", "WontonForCausalLM")

import torch  # noqa: E402
from hf_common_tests.causal_lm_tester import CausalLMModelTest, CausalLMModelTester  # noqa: E402
from hf_common_tests.test_modeling_common import ids_tensor  # noqa: E402


class WontonModelTester(CausalLMModelTester):
    base_model_class = WontonModel
    config_class = WontonConfig
    causal_lm_class = WontonForCausalLM

    def __init__(self, parent, **kwargs):
        # `position_embedding_type`, `qk_layernorm` become config fields through `get_config`.
        super().__init__(parent, **kwargs)


class _WontonChecks:
    """GPT-NeoX's own model-file checks (tests/models/gpt_neox there), ported: the mixins do not have them.

    Its `test_model_for_{question_answering,sequence_classification,token_classification}` and
    `test_model_as_decoder*` (cross-attention) are not ported: Wonton is a decoder-only causal LM and has
    neither task heads nor cross-attention.
    """

    def test_model_for_causal_lm(self):
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = WontonForCausalLM(config).eval()
        labels = inputs["input_ids"]
        result = model(**inputs, labels=labels)
        self.assertEqual(result.logits.shape, (*labels.shape, config.vocab_size))
        self.assertTrue(torch.isfinite(result.loss))

    def test_decoder_model_past_large_inputs(self):
        """Three new tokens at once, with a padding mask, on top of a cache equal a full forward."""
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = WontonForCausalLM(config).eval()
        input_ids, input_mask = inputs["input_ids"], torch.ones_like(inputs["input_ids"])
        with torch.no_grad():
            cache = model(input_ids, attention_mask=input_mask, use_cache=True).cache
            next_tokens = ids_tensor((self.model_tester.batch_size, 3), config.vocab_size)
            next_mask = ids_tensor((self.model_tester.batch_size, 3), vocab_size=2)
            next_input_ids = torch.cat([input_ids, next_tokens], dim=-1)
            next_attention_mask = torch.cat([input_mask, next_mask], dim=-1)
            full = model(next_input_ids, attention_mask=next_attention_mask, output_hidden_states=True)
            cached = model(next_tokens, attention_mask=next_attention_mask, cache=cache, output_hidden_states=True)
        for layer in range(len(full.hidden_states)):
            torch.testing.assert_close(
                cached.hidden_states[layer], full.hidden_states[layer][:, -3:], atol=1e-4, rtol=1e-4
            )

    def test_cached_forward_with_and_without_attention_mask(self):
        """An all-ones mask and no mask give the same cached forward (transformers issue 31943)."""
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = WontonModel(config).eval()
        self.assertEqual(model.config._attn_implementation, "sdpa")
        input_ids = inputs["input_ids"]
        cached_len = input_ids.shape[-1] // 2
        ones = torch.ones_like(input_ids)
        with torch.no_grad():
            outputs = []
            for mask in (ones, None):
                cache = model(input_ids[:, :cached_len], attention_mask=ones[:, :cached_len], use_cache=True).cache
                outputs.append(model(input_ids[:, cached_len:], attention_mask=mask, cache=cache).last_hidden_state)
        torch.testing.assert_close(outputs[0], outputs[1], atol=1e-5, rtol=1e-5)

    @unittest.skip(
        "Wonton rotates the full head dim (the paper's RoPE); partial rotation is not part of the architecture"
    )
    def test_model_rope_with_partial_rotation(self):
        pass


class WontonModelTest(_WontonChecks, CausalLMModelTest, unittest.TestCase):
    """The paper's 7B block: RoPE, QK-LayerNorm, max-z loss."""

    model_tester_class = WontonModelTester


class _LearnedPositionsTester(WontonModelTester):
    def __init__(self, parent, **kwargs):
        super().__init__(parent, position_embedding_type="learned", qk_layernorm=False, **kwargs)


class WontonLearnedPositionsModelTest(_WontonChecks, CausalLMModelTest, unittest.TestCase):
    """The public 1.5B's block: learned absolute positions, no QK-LayerNorm."""

    model_tester_class = _LearnedPositionsTester


# RoPE scaling (linear, dynamic, YaRN) extends a rotary model past its trained length; a learned position
# table has no rotation to scale (and rejects positions beyond it with a clear error). The same tests run,
# and pass, on `WontonModelTest`.
_NO_ROPE = "learned absolute positions: there is no RoPE to scale (the RoPE block runs these tests)"
for _name in [n for n in dir(CausalLMModelTest) if n.startswith("test_model_rope_")]:
    setattr(WontonLearnedPositionsModelTest, _name, unittest.skip(_NO_ROPE)(getattr(CausalLMModelTest, _name)))
