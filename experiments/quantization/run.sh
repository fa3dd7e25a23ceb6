#!/usr/bin/env bash
# The quantization study: train, quantize with every method, QAT, then one table (experiments/quantization/README.md).
#   bash experiments/quantization/run.sh [gpt|llama|all]     (inside the venv: `source .venv/bin/activate`)
set -euo pipefail
OUT=${OUT:-outputs/quantization}
which=${1:-all}
ptq() {  # quantize run $1's last.ckpt with every post-training method
  local dir=$OUT/$1/checkpoints
  for m in int8_weight_only int8_dynamic int4_weight_only int8_dynamic_int4_weight; do
    archlab quantize ckpt=$dir/last.ckpt quantization=$m overwrite=true | tail -3
  done
  archlab quantize ckpt=$dir/last.ckpt quantization=int4_weight_only quantization.int4_format=packed \
    out=$dir/last.int4_packed.ckpt overwrite=true | tail -3
  archlab quantize ckpt=$dir/last.ckpt quantization=int4_weight_only quantization.int4_format=packed \
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
python experiments/quantization/table.py $OUT
