"""Model smoke run (the main job until `examples/pretrain.py` lands): build `wonton-tiny`, take a few
optimizer steps on a fixed batch, save it, reload it through `AutoModelForCausalLM`, and generate.

    python examples/model_smoke.py [--output outputs/model-smoke]
"""

import argparse

import torch
from transformers import AutoModelForCausalLM

from wonton_hf import WontonConfig, WontonForCausalLM


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="outputs/model-smoke")
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = WontonForCausalLM(WontonConfig.from_preset("wonton-tiny"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1)
    batch = torch.randint(4, model.config.vocab_size, (4, 64))
    for step in range(args.steps):
        out = model(input_ids=batch, labels=batch)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        if step % 10 == 0 or step == args.steps - 1:
            print(f"step {step:3d}  loss {out.loss.item():.3f}  ce {out.ce_loss.item():.3f}  max-z {out.max_z_loss.item():.2f}")
    model.save_pretrained(args.output)
    reloaded = AutoModelForCausalLM.from_pretrained(args.output)
    print("generated:", reloaded.generate(batch[:1, :8], max_new_tokens=8, do_sample=False, pad_token_id=0)[0].tolist())
    print(f"saved to {args.output}; load with AutoModelForCausalLM.from_pretrained({args.output!r})")


if __name__ == "__main__":
    main()
