"""The decoder plugin's benchmarks, one module each, registered in the ``archlab.benchmarks`` entry-point group
(``pyproject.toml``) and run as ``archlab bench <name>``:

  decoder   training throughput of the GPT-2 / Llama settings vs Hugging Face GPT-2 / Llama (``decoder.py``)
  mixers    every token mixer (attention, sliding window, lstm, gru, mamba, mamba2, rglru) and HF Mamba / Mamba-2 /
            RecurrentGemma: training and generation tokens/s, decode state bytes per sequence (``mixers.py``)
  moe       the MoE layer vs Hugging Face's Mixtral block and a dense MLP, the MoE model vs dense (``moe.py``;
            ``--breakdown`` adds ``moe_breakdown.py``)
  rnn       LSTM / GRU stacks vs a GPT of similar size: training, generation, state per sequence (``rnn.py``)
  sparse    cost of each sparse attention kernel vs dense SDPA: time and peak memory (``sparse.py``)
  context   the cost of context: training step time and peak tensor memory of one layer of every token mixer,
            1k-32k tokens, log-log slopes and crossovers vs dense attention (``context.py``)
  decode    prefill and decode tokens/s and decode-state bytes of a study's variants at a long context, as
            ratios to one of them (``decode.py``; the hybrids-vs-parts study)

Timing and table helpers come from ``framework.bench.common``, the ours-vs-Hugging-Face harness of ``decoder`` from
``framework.bench.vs_reference``. Nothing here is imported by the core.
"""
