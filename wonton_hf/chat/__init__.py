"""The Wonton chat model (report section 4): the `[INST]` template, instruction-data adapters, SFT, a terminal chat.

The names load on first use, so the SFT config (`wonton_hf.chat.config`) is read and checked without torch.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "FORMATS": "formats",
    "BadRecord": "formats",
    "ChatDataReport": "formats",
    "ChatSource": "formats",
    "build_chat_dataset": "formats",
    "load_chat_sources": "formats",
    "normalise_messages": "formats",
    "oasst_conversations": "formats",
    "CHAT_TEMPLATE": "template",
    "INST_CLOSE": "template",
    "INST_OPEN": "template",
    "format_conversation": "template",
    "install_chat_template": "template",
}


__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = sorted(_EXPORTS)
