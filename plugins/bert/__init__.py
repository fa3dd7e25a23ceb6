"""The encoder-only plugin: BERT (post-LN, learned positions, token types, tied MLM head), trained
with the ``masked_lm`` objective. Registered via the ``archlab.plugins`` entry point
``bert = "plugins.bert:PLUGIN"`` in pyproject.toml."""
from framework.plugin import Plugin

from .config import BertConfig
from .hf_convert import HF_BERT
from .metrics import bert_metrics
from .model import Bert, build_bert

PLUGIN = Plugin(
    name="bert",
    description="Encoder-only transformer (BERT: bidirectional, post-LN, masked-LM head tied to the embeddings)",
    objective="masked_lm",
    config_class=BertConfig,
    build=build_bert,
    metrics=bert_metrics,
    config_package="plugins.bert.conf",
    hf_architectures=(HF_BERT,),
)

__all__ = ["Bert", "BertConfig", "PLUGIN"]
