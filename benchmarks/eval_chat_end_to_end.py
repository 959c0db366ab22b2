"""`eval-chat` end to end on two saved models with the tests' local judge: answers/s, judgments/s, and a re-run.

    accelerate launch examples/pretrain.py && accelerate launch examples/sft.py --model outputs/pretrain-demo/final
    python benchmarks/eval_chat_end_to_end.py                       # the CPU demo's base and chat models
    python benchmarks/eval_chat_end_to_end.py --base DIR --chat DIR --max-new-tokens 64

The judge is `tests/judge/server.py`: a real chat-completions server on 127.0.0.1 whose ratings follow a fixed rule
and which injects its default faults (429s, 500s, slow replies, unparsable ratings), so the figures include the
retries a real endpoint causes. The ratings mean nothing; the timings and the judge-call counts are the point: the
second run must make no judge call and generate no answer.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.judge.server import MODEL, JudgeServer  # noqa: E402
from wonton_hf.evaluation.judge.backends import OpenAICompatibleJudge  # noqa: E402
from wonton_hf.evaluation.judge.run import GenerationSettings, ModelSpec, evaluate_chat  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default=str(ROOT / "outputs" / "pretrain-demo" / "final"))
    parser.add_argument("--chat", default=str(ROOT / "outputs" / "sft-demo" / "final"))
    parser.add_argument("--questions", default="sample")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    models = [ModelSpec("base", args.base, "base"), ModelSpec("chat", args.chat, "chat")]
    generation = GenerationSettings(max_new_tokens=args.max_new_tokens)
    server = JudgeServer().start()
    try:
        judge = OpenAICompatibleJudge(server.url, MODEL, api_key="test", timeout=2.0, concurrency=4)
        with tempfile.TemporaryDirectory() as output:
            start = time.perf_counter()
            first = evaluate_chat(models, judge, output_dir=output, questions=args.questions, generation=generation)
            wall = time.perf_counter() - start
            start = time.perf_counter()
            again = evaluate_chat(models, judge, output_dir=output, questions=args.questions, generation=generation)
            rerun = time.perf_counter() - start
    finally:
        server.stop()
    t = first.timings
    figures = {
        "wall_s": round(wall, 1),
        "answers": t["answers_generated"],
        "answers_per_s": round(t["answers_generated"] / t["generation_s"], 2),
        "judgments": t["judgments"],
        "judge_calls": t["judge_calls"],
        "judgments_per_s": round(t["judgments"] / t["judging_s"], 2),
        "rerun_s": round(rerun, 1),
        "rerun_judge_calls": again.timings["judge_calls"],
        "rerun_answers_generated": again.timings["answers_generated"],
    }
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
