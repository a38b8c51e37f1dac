#!/usr/bin/env bash
# Builds the bert-wasm kernels: src/engine/backends/bert-wasm/kernels.c ->
#   bert-simd128.wasm (wasm32 + SIMD128) and bert-relaxed.wasm (+ relaxed SIMD).
# Needs Debian's clang-19 and lld-19 (apt-get install -y clang-19 lld-19). Reproducible: no debug
# info, no paths or timestamps in the output, custom sections stripped; building twice gives the
# same bytes (checked with --check).
#
# clang is only used to compile (-c); we link with wasm-ld-19 ourselves, so clang never runs a
# wasm-opt found on PATH (Debian's binaryen 108 corrupts relaxed-SIMD modules), and clang-19's
# --no-wasm-opt (which silently skips linking) is not needed.
set -euo pipefail
cd "$(dirname "$0")/../.."
CLANG=${CLANG:-clang-19}
WASM_LD=${WASM_LD:-wasm-ld-19}
SRC=src/engine/backends/bert-wasm/kernels.c
OUT=src/engine/backends/bert-wasm
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

CFLAGS=(--target=wasm32-unknown-unknown -O3 -ffreestanding -nostdlib -fno-builtin -fno-exceptions
  -fno-ident -fno-unwind-tables -fno-asynchronous-unwind-tables -ffile-prefix-map="$PWD"=.
  -std=c11 -Wall -Wextra -Werror -Wno-unused-function -msimd128 -mbulk-memory -mnontrapping-fptoint
  -msign-ext -mmutable-globals)
EXPORTS=(activate embed layernorm quantize_rows gemm_q8 linear_f32 attention attention_scratch)
LDFLAGS=(--no-entry --strip-all --gc-sections --stack-first -z stack-size=65536 --export=__heap_base
  --export-memory --initial-memory=1048576 --max-memory=4294967296)
for e in "${EXPORTS[@]}"; do LDFLAGS+=(--export="$e"); done

build() { # name extra-cflags...
  local name=$1; shift
  "$CLANG" "${CFLAGS[@]}" "$@" -c "$SRC" -o "$TMP/$name.o"
  "$WASM_LD" "${LDFLAGS[@]}" "$TMP/$name.o" -o "$TMP/$name.wasm"
}

build bert-simd128
build bert-relaxed -mrelaxed-simd -DBERT_RELAXED

if [[ ${1:-} == --check ]]; then
  # Reproducibility / up-to-date check: the committed modules must equal a fresh build.
  cmp "$TMP/bert-simd128.wasm" "$OUT/bert-simd128.wasm"
  cmp "$TMP/bert-relaxed.wasm" "$OUT/bert-relaxed.wasm"
  echo "bert-wasm: committed modules match a fresh build"
else
  install -m 644 "$TMP/bert-simd128.wasm" "$TMP/bert-relaxed.wasm" "$OUT/"
  ls -l "$OUT"/*.wasm
fi
