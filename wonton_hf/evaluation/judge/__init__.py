"""Judged chat evaluation as in the Wonton report (section 4): an LLM judge rates answers 1-10, chat vs. base.

Here, beside the lm-eval suites, because it is the other half of evaluating a model: `questions` (MT-Bench by
default, any JSONL), `generate` (answers: chat template or plain continuation), `prompts` (MT-Bench's grading
prompts, the `[[rating]]` parser), `backends` (OpenAI-compatible HTTP or local transformers judge, the cache,
retries), `report` (means, intervals, chat - base, table, figure), `run` (`evaluate_chat`), `cli`
(`wonton-hf eval-chat`). Names load lazily so that the CLI listing stays light.
"""

from ..._lazy import lazy_exports

_EXPORTS = {
    "Question": "questions",
    "load_questions": "questions",
    "ModelSpec": "generate",
    "GenerationSettings": "generate",
    "build_judge_prompt": "prompts",
    "parse_rating": "prompts",
    "JudgmentCache": "backends",
    "OpenAICompatibleJudge": "backends",
    "TransformersJudge": "backends",
    "JudgeUnavailable": "backends",
    "evaluate_chat": "run",
}

__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = sorted(_EXPORTS)
