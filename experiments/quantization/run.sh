#!/usr/bin/env bash
# The quantization study: train, quantize with every method, QAT, then one table (experiments/quantization/README.md).
#   bash experiments/quantization/run.sh [gpt|llama|plugins|all]     (inside the venv: `source .venv/bin/activate`)
#   plugins: one preset of every plugin family (MoE, DeepSeek, Mamba, LSTM, BERT, T5, Transformer, RNN seq2seq),
#   500 steps each at its tiny default size, then every post-training method (STEPS=N to change the steps;
#   PRESETS="moe lstm" runs only those, e.g. to split the run over two one-thread jobs; TABLE=0 skips the table)
set -euo pipefail
OUT=${OUT:-outputs/quantization}
which=${1:-all}
ptq() {  # quantize run $1's last.ckpt with every post-training method; $2...: extra quantize overrides
  # skip_indivisible: a layer the int4 group does not divide (mamba's dt_proj with 8 inputs, MLA's kv_b_proj at
  # group 64, an attention scorer with one output) stays fp32; the report row lists each such layer
  local dir=$OUT/$1/checkpoints int4=(quantization.skip_indivisible=true)
  shift
  for m in int8_weight_only int8_dynamic; do
    archlab quantize ckpt=$dir/last.ckpt quantization=$m "$@" overwrite=true | tail -3
  done
  for m in int4_weight_only int8_dynamic_int4_weight; do
    archlab quantize ckpt=$dir/last.ckpt quantization=$m "${int4[@]}" "$@" overwrite=true | tail -3
  done
  archlab quantize ckpt=$dir/last.ckpt quantization=int4_weight_only quantization.int4_format=packed "${int4[@]}" "$@" \
    out=$dir/last.int4_packed.ckpt overwrite=true | tail -3
  archlab quantize ckpt=$dir/last.ckpt quantization=int4_weight_only quantization.int4_format=packed "${int4[@]}" "$@" \
    quantization.group_size=64 out=$dir/last.int4_packed_g64.ckpt overwrite=true | tail -3
}
if [[ $which == gpt || $which == all ]]; then  # the main job (2000 steps), and the same with int4 QAT
  archlab train hydra.run.dir=$OUT/gpt overwrite=true logger=csv
  ptq gpt
  archlab train hydra.run.dir=$OUT/gpt_qat overwrite=true logger=csv quantization=qat_int4_weight_only
fi
if [[ $which == llama || $which == all ]]; then  # llama at d_model 512 (4 layers, 8 heads), the same recipe
  L=(model=llama model.d_model=512 model.n_heads=8 logger=csv)
  archlab train "${L[@]}" hydra.run.dir=$OUT/llama512 overwrite=true
  ptq llama512
  archlab train "${L[@]}" hydra.run.dir=$OUT/llama512_qat overwrite=true quantization=qat_int4_weight_only
fi
if [[ $which == plugins || $which == all ]]; then
  STEPS=${STEPS:-500}
  presets=(  # run name | train overrides (text data unless the model needs pairs) [| quantize overrides]
    # the LSTM LM's only matmuls outside its fused cell are the tied embedding and head: quantize those
    "moe|model=moe"  "deepseek|model=deepseek"  "mamba|model=mamba"  "bert|model=bert"
    "lstm|model=lstm|quantization.include_embeddings=true"
    "t5|model=t5 data=shakespeare data.vocab_size=320"
    "transformer|model=transformer data=seq2seq data.task=reverse"
    "rnn_seq2seq|model=rnn_seq2seq data=seq2seq data.task=reverse"
  )
  for entry in "${presets[@]}"; do
    name=${entry%%|*}
    [[ -n ${PRESETS:-} && " $PRESETS " != *" $name "* ]] && continue
    IFS='|' read -r _ train quant <<< "$entry"
    read -ra args <<< "$train"
    read -ra qargs <<< "${quant:-}"
    archlab train "${args[@]}" trainer.max_steps=$STEPS trainer.val_check_interval=$STEPS logger=csv \
      hydra.run.dir=$OUT/plugins/$name overwrite=true
    (OUT=$OUT/plugins ptq $name "${qargs[@]}")
  done
  if [[ ${TABLE:-1} == 1 ]]; then python experiments/quantization/table.py $OUT/plugins; fi
fi
if [[ ${TABLE:-1} == 1 ]]; then python experiments/quantization/table.py $OUT; fi
