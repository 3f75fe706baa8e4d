#!/usr/bin/env bash
# Fetch the calibration and evaluation text (PyPI chatterbot-corpus 1.3.3, English dialogues, BSD-3-Clause),
# sha256-verified, and write two disjoint JSONL chat files into $POWERINFER_CORPUS
# (default ~/.cache/powerinfer/corpus):
#   calibration.jsonl  for `powerinfer profile` (its own held-out split is taken from the end of it)
#   eval.jsonl         for `powerinfer perplexity`, never seen by the profiler
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${POWERINFER_CORPUS:-$HOME/.cache/powerinfer/corpus}"
PY="${PYTHON:-python3}"
if [ -s "$dir/calibration.jsonl" ] && [ -s "$dir/eval.jsonl" ]; then
  echo "corpus: present"
  exit 0
fi
mkdir -p "$dir"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
sha=86de5300afb9a80826386339d3bec79c0a72eb0358abb8327e2ecef5ae0ce154
"$PY" -m pip download --quiet --no-deps --disable-pip-version-check -d "$work" chatterbot-corpus==1.3.3
whl="$work/chatterbot_corpus-1.3.3-py2.py3-none-any.whl"
[ "$(sha256sum "$whl" | cut -d' ' -f1)" = "$sha" ] || { echo "corpus: sha256 mismatch" >&2; exit 1; }
"$PY" -c 'import yaml' 2>/dev/null || "$PY" -m pip install --quiet --disable-pip-version-check pyyaml
"$PY" -m zipfile -e "$whl" "$work/x"
en="$work/x/chatterbot_corpus/data/english"
eval_files="ai emotion literature psychology science history trivia"
cal=()
ev=()
for f in "$en"/*.yml; do
  name="$(basename "$f" .yml)"
  if [[ " $eval_files " == *" $name "* ]]; then ev+=("$f"); else cal+=("$f"); fi
done
"$PY" scripts/corpus_to_jsonl.py "$dir/calibration.jsonl" "${cal[@]}"
"$PY" scripts/corpus_to_jsonl.py "$dir/eval.jsonl" "${ev[@]}"
