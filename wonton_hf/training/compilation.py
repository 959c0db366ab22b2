"""`torch.compile` for training, one decoder layer at a time (`train.compile` in the run config).

What is compiled, and why not the whole model. Each `WontonDecoderLayer` (the model's `_no_split_modules`) is
compiled in place with `nn.Module.compile`, as OLMo-core and torchtitan compile their blocks and as accelerate's
`compile_regions_deepspeed` / `compile_regions_fsdp2` do. Everything around the layers stays eager:

- the document mask: `create_causal_mask` and `_document_mask` read position-id restarts with data-dependent
  shortcuts (`None` when nothing is excluded) that only run eagerly; a layer receives the finished mask (a 4-D
  tensor for eager/sdpa, a `BlockMask` for flex) as an input;
- the chunked output head and loss (`_ChunkedLanguageModelLoss`): eagerly it drops the label -100 rows before the
  vocabulary matmuls and reuses one logits buffer; traced, it scores every row into fresh buffers;
- the hooks the Trainer's callbacks put on the model (throughput counting, the data scheduler's fields).

All layers trace to one graph (the layers differ only in their weights, which dynamo passes as inputs), so the
compile cost does not grow with depth, and the packed rows' fixed shape means no recompilation after the first
step (a test counts dynamo's frames over several steps). In place, the parameter names and the `state_dict` do
not change: checkpoints of compiled and eager runs are interchangeable, and DeepSpeed or FSDP2 wrap the model
after this as they would an eager one.

Measured against the Trainer's own `torch_compile` (which wraps the whole model in `torch.compile`) by
`benchmarks/compile_speed.py` on 2 CPU cores, inductor: the whole model took 2.3-2.6x the layers' compile time
(wonton-tiny 175 s against 67 s, wonton-125m 457 s against 196 s) for no consistent step gain (tiny: 1.15x eager
against the layers' 1.29x; 125m: both within the noise). docs/benchmarks.md has the table.
"""

from __future__ import annotations

from torch import nn

__all__ = ["compile_decoder_layers", "decoder_layers"]


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks of a transformers model: the modules whose class is in its `_no_split_modules`."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    layers = [module for module in model.modules() if type(module).__name__ in names]
    if not layers:
        raise ValueError(
            f"{type(model).__name__} names no repeated block in `_no_split_modules` ({sorted(names)}): "
            "nothing to compile per layer."
        )
    return layers


def compile_decoder_layers(
    model: nn.Module,
    *,
    backend: str = "inductor",
    mode: str | None = None,
    fullgraph: bool = False,
    dynamic: bool | None = None,
) -> int:
    """Compile every decoder layer of `model` in place (lazily: the first forward traces); returns how many.

    The arguments are `torch.compile`'s. Call it before the Trainer prepares the model: accelerate's float8
    conversion swaps the layers' linears before their first call, so the trace sees the float8 ones.
    """
    layers = decoder_layers(model)
    for layer in layers:
        layer.compile(backend=backend, mode=mode, fullgraph=fullgraph, dynamic=dynamic)
    return len(layers)
