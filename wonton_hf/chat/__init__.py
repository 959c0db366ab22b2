"""The Wonton chat model (report section 4): the `[INST]` template, instruction-data adapters, SFT, a terminal chat."""

from .formats import (
    FORMATS,
    BadRecord,
    ChatDataReport,
    ChatSource,
    build_chat_dataset,
    load_chat_sources,
    normalise_messages,
    oasst_conversations,
)
from .template import CHAT_TEMPLATE, INST_CLOSE, INST_OPEN, format_conversation, install_chat_template

__all__ = [
    "CHAT_TEMPLATE",
    "FORMATS",
    "INST_CLOSE",
    "INST_OPEN",
    "BadRecord",
    "ChatDataReport",
    "ChatSource",
    "build_chat_dataset",
    "format_conversation",
    "install_chat_template",
    "load_chat_sources",
    "normalise_messages",
    "oasst_conversations",
]
