"""The scheduler's settings: one frozen object, checked once, shared by the scheduler, every shard and every stream.

Built once (from the run config by `training.pretrain.build_scheduler`, or from `OnlineDataScheduler`'s keyword
arguments) and handed down unchanged: a DataLoader worker pickles it with the scheduler, and no layer restates or
re-checks a field. Importing it imports neither torch nor transformers (nor numpy), so a config check can use it.
"""

from __future__ import annotations

from dataclasses import dataclass

PIECE_CHARS = 32_768
"""Texts longer than this are tokenized in pieces (a fixed constant, not a setting: token offsets, and so resume
positions, must not depend on settings). Here because the smallest `buffer_tokens` derives from it."""
DEFAULT_BUFFER_TOKENS = 262_144
"""Default per-source budget of token ids held ahead of the packer (1 MiB as int32)."""


def min_buffer_tokens(read_ahead: int) -> int:
    """One text piece per tokenizer batch held: the one being packed and the `read_ahead` ones after it."""
    return PIECE_CHARS * (read_ahead + 1)


@dataclass(frozen=True)
class SchedulerSettings:
    """How the scheduler reads, mixes and packs; `OnlineDataScheduler`'s keyword arguments are these fields.

    The token ids may be left None here: the scheduler fills them in from its tokenizer, so
    the settings a shard receives always carry them.
    """

    seq_len: int = 2048
    """tokens per window"""
    seed: int = 0
    """seeds file order, shuffle blocks and multiplexer tie-breaks (a resume must use the same)"""
    batch_size: int = 1
    """windows per batch of one rank (`per_device_train_batch_size`): batches are the unit of `stratified` and,
    with `gradient_accumulation_steps`, how a worker knows the optimizer step"""
    gradient_accumulation_steps: int = 1
    """batches per optimizer step"""
    block_size: int = 1024
    """records per shuffle block (the shuffle buffer; a resume must use the same)"""
    stratified: bool = False
    """every batch matches the weights up to one document (instead of the stream as a whole)"""
    share_tolerance: float | None = 0.005
    """how far (relative) a segment may take its source beyond its target share; longer documents are cut there
    and continue later. None: never cut except at window ends (see `multiplexer`)"""
    min_segment_tokens: int = 64
    """the shortest segment a share cut leaves"""
    prefetch_blocks: int = 1
    """tokenizer batches per source read and tokenized ahead in a background thread (the tokenizer runs without
    the GIL, so encoding overlaps reading and packing); 0 tokenizes in the iterating thread, in small batches.
    (The name predates batches: whole blocks are no longer tokenized at once.)"""
    buffer_tokens: int = DEFAULT_BUFFER_TOKENS
    """per source and shard, the token ids held ahead of the packer (4 bytes each), whatever the document length
    or `block_size` (see `stream.SourceStream`): raise it for throughput with few sources, lower it for memory
    with many"""
    held_out_share: float = 0.0
    """share of every source's documents, chosen by a hash of their text, that the stream never yields: the
    held-out evaluation documents (`heldout`); 0: none. Part of the resume state: a resume must use the same"""
    eos_token_id: int | None = None
    """None: the tokenizer's"""
    pad_token_id: int | None = None
    """None: the tokenizer's, else 0"""
    bos_token_id: int | None = None
    """added at the start of every document only if given"""

    def __post_init__(self) -> None:
        for name in ("seq_len", "batch_size", "gradient_accumulation_steps", "block_size", "min_segment_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"OnlineDataScheduler: `{name}` must be a positive integer, got {value!r}.")
        if not isinstance(self.prefetch_blocks, int) or self.prefetch_blocks < 0:
            raise ValueError(
                f"OnlineDataScheduler: `prefetch_blocks` must be an integer >= 0, got {self.prefetch_blocks!r}."
            )
        least = min_buffer_tokens(self.prefetch_blocks)
        if not isinstance(self.buffer_tokens, int) or self.buffer_tokens < least:
            raise ValueError(
                f"OnlineDataScheduler: `buffer_tokens` must be an integer >= {least} (one text piece per batch held "
                f"with `prefetch_blocks`={self.prefetch_blocks}), got {self.buffer_tokens!r}."
            )
        share = self.held_out_share
        if not (isinstance(share, int | float) and 0 <= share < 1):
            raise ValueError(f"OnlineDataScheduler: `held_out_share` must be a number in [0, 1), got {share!r}.")
        tolerance = self.share_tolerance
        if tolerance is not None and not (isinstance(tolerance, int | float) and tolerance >= 0):
            raise ValueError(
                f"OnlineDataScheduler: `share_tolerance` must be None or a number >= 0, got {tolerance!r}."
            )
        # normalised, not refused: a numpy integer seed or a truthy flag means what it says
        object.__setattr__(self, "seed", int(self.seed))
        object.__setattr__(self, "stratified", bool(self.stratified))

    @property
    def tokens_per_rank_step(self) -> int:
        """Tokens one rank contributes to an optimizer step (times the world size: the step's tokens)."""
        return self.seq_len * self.batch_size * self.gradient_accumulation_steps


__all__ = ["DEFAULT_BUFFER_TOKENS", "PIECE_CHARS", "SchedulerSettings", "min_buffer_tokens"]
